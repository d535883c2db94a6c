"""Block hash chains match the engine's cached-block names; text chunk chains share prefixes."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slipway.engine.kv.hashing import hash_prefix_blocks
from slipway.routing import HASH_MASK, block_hash_chain, text_chunk_chain

tokens = st.lists(st.integers(0, 200_000), max_size=80)


@settings(max_examples=200, deadline=None)
@given(token_ids=tokens, block_size=st.integers(1, 17))
def test_block_hashes_are_the_engines_cut_to_63_bits(token_ids, block_size):
    expected = tuple(h & HASH_MASK for h in hash_prefix_blocks(token_ids, block_size))
    assert block_hash_chain(token_ids, block_size) == expected


def test_the_documented_scheme_by_hand():
    first = hashlib.blake2b((0).to_bytes(16, "little") + (1).to_bytes(8, "little") + (2).to_bytes(8, "little"),
                            digest_size=16)
    first_full = int.from_bytes(first.digest(), "little")
    second = hashlib.blake2b(first_full.to_bytes(16, "little") + (3).to_bytes(8, "little")
                             + (4).to_bytes(8, "little"), digest_size=16)
    second_full = int.from_bytes(second.digest(), "little")
    assert block_hash_chain([1, 2, 3, 4, 5], 2) == (first_full & HASH_MASK, second_full & HASH_MASK)


def test_only_full_blocks_have_hashes_and_max_blocks_keeps_the_leading_ones():
    assert block_hash_chain([1, 2, 3], 4) == ()
    chain = block_hash_chain(list(range(64)), 16)
    assert len(chain) == 4 and all(0 <= h <= HASH_MASK for h in chain)
    assert block_hash_chain(list(range(64)), 16, max_blocks=2) == chain[:2]


@settings(max_examples=100, deadline=None)
@given(shared=tokens, tail_a=tokens, tail_b=tokens)
def test_a_shared_token_prefix_gives_a_shared_run_of_hashes(shared, tail_a, tail_b):
    a, b = block_hash_chain(shared + tail_a, 4), block_hash_chain(shared + tail_b, 4)
    full = len(shared) // 4
    assert a[:full] == b[:full]


def test_a_block_hash_covers_its_whole_prefix():
    # Same second block, different first block: the second hashes differ too.
    assert block_hash_chain([1, 1, 9, 9], 2)[1] != block_hash_chain([2, 2, 9, 9], 2)[1]


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="block_size"):
        block_hash_chain([1], 0)
    with pytest.raises(ValueError, match="chunk_chars"):
        text_chunk_chain("a", 0, 10)


def test_text_chunks_include_the_short_last_one_and_stop_at_max_chars():
    assert len(text_chunk_chain("abcdefghij", 4, 100)) == 3
    assert len(text_chunk_chain("abcdefghij", 4, 8)) == 2
    assert text_chunk_chain("", 4, 100) == ()
    assert text_chunk_chain("abcdefghXY", 4, 100)[:2] == text_chunk_chain("abcdefghZW", 4, 100)[:2]
    assert text_chunk_chain("abcdefghXY", 4, 100)[2] != text_chunk_chain("abcdefghZW", 4, 100)[2]


def test_text_chunks_hash_any_string_the_same_way_every_time():
    odd = "caf\u00e9 \ud800 \U0001f600"  # accents, a lone surrogate (JSON allows one), an emoji
    assert text_chunk_chain(odd, 3, 100) == text_chunk_chain(odd, 3, 100)
    assert all(0 <= h <= HASH_MASK for h in text_chunk_chain(odd, 3, 100))
