"""PrefixIndex: longest allowed match, LRU order of forgetting, bounded size."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slipway.routing import PrefixIndex, PrefixMatch


def test_the_deepest_match_wins_and_is_the_last_replica_to_take_it():
    index = PrefixIndex(100)
    index.record((1, 2, 3), "a")
    index.record((1, 2, 4), "b")
    assert index.deepest((1, 2, 3, 9), {"a", "b"}) == PrefixMatch("a", 3)
    assert index.deepest((1, 2, 5), {"a", "b"}) == PrefixMatch("b", 2)  # (1, 2) went to b last
    assert index.deepest((7,), {"a", "b"}) is None


def test_owners_outside_allowed_are_skipped_for_a_shallower_one():
    index = PrefixIndex(100)
    index.record((1, 2), "a")
    index.record((1, 2, 3), "b")
    index.record((1,), "a")
    assert index.deepest((1, 2, 3), {"b"}) == PrefixMatch("b", 3)
    assert index.deepest((1, 2, 3), {"a"}) == PrefixMatch("a", 1)
    assert index.deepest((1, 2, 3), set()) is None


def test_the_least_recently_routed_prefixes_are_forgotten_first():
    index = PrefixIndex(3)
    index.record((1, 2), "a")
    index.record((3,), "b")
    index.record((1,), "a")      # refreshes 1, so 2 is now the oldest
    index.record((4,), "c")
    assert len(index) == 3
    assert index.owner(2) is None
    assert [index.owner(h) for h in (1, 3, 4)] == ["a", "b", "c"]


def test_a_chain_longer_than_the_index_keeps_its_deep_end():
    index = PrefixIndex(2)
    index.record((1, 2, 3, 4), "a")
    assert len(index) == 2 and index.owner(1) is None
    assert index.deepest((1, 2, 3, 4), {"a"}) == PrefixMatch("a", 4)


def test_reading_does_not_change_what_is_forgotten():
    index = PrefixIndex(2)
    index.record((1,), "a")
    index.record((2,), "a")
    assert index.deepest((1,), {"a"}) is not None and index.owner(1) == "a"
    index.record((3,), "a")
    assert index.owner(1) is None


def test_an_index_needs_room():
    with pytest.raises(ValueError, match="max_entries"):
        PrefixIndex(0)


@settings(max_examples=100, deadline=None)
@given(max_entries=st.integers(1, 20),
       chains=st.lists(st.lists(st.integers(0, 40), max_size=8).map(tuple), max_size=40))
def test_size_never_exceeds_the_bound(max_entries, chains):
    index = PrefixIndex(max_entries)
    for number, chain in enumerate(chains):
        index.record(chain, f"r{number % 3}")
        assert len(index) <= max_entries
        if chain:
            assert index.owner(chain[-1]) == f"r{number % 3}"


def test_a_million_distinct_prefixes_stay_within_the_bound():
    index = PrefixIndex(1000)
    for prefix_hash in range(1_000_000):
        index.record((prefix_hash,), "a")
    assert len(index) == 1000
    assert index.owner(999_999) == "a" and index.owner(998_999) is None
