"""The contract every registered policy keeps, checked with generated replica sets and requests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slipway.routing import ReplicaView, RouteRequest, RoutingPolicy, get_policy, known_policies

IDS = [f"r{i}" for i in range(8)]
HASHES = st.integers(0, 7)  # few distinct block hashes, so generated caches overlap generated prompts

replica_sets = st.lists(
    st.builds(ReplicaView, replica_id=st.sampled_from(IDS), url=st.just("http://x"),
              in_flight=st.integers(0, 50), healthy=st.booleans(),
              cached_block_hashes=st.none() | st.frozensets(HASHES, max_size=6)),
    max_size=8, unique_by=lambda r: r.replica_id,
)
exclusions = st.frozensets(st.sampled_from(IDS))
requests = st.builds(RouteRequest, deployment_id=st.just("d-1"),
                     prompt_key=st.none() | st.sampled_from(["k1", "k2"]),
                     prompt_text=st.none() | st.text(alphabet="ab", max_size=200),
                     block_hashes=st.lists(HASHES, max_size=6).map(tuple))


@pytest.mark.parametrize("name", ["round_robin", "least_load", "prefix_aware", "kv_aware"])
@settings(max_examples=200, deadline=None)
@given(calls=st.lists(st.tuples(replica_sets, requests, exclusions), min_size=1, max_size=6))
def test_choice_is_healthy_allowed_and_none_only_without_candidates(name, calls):
    policy = get_policy(name)
    for replicas, request, exclude in calls:  # policies keep state between calls; the contract holds on each
        candidates = {r.replica_id for r in replicas if r.healthy and r.replica_id not in exclude}
        chosen = policy.choose(replicas, request, exclude=exclude)
        if not candidates:
            assert chosen is None
        else:
            assert chosen is not None
            assert chosen.replica_id in candidates
            assert chosen in replicas


def test_every_policy_of_the_spec_is_registered():
    assert {"round_robin", "least_load", "prefix_aware", "kv_aware"} <= set(known_policies())


def test_choose_reports_each_choice_to_on_routed_and_nothing_when_none():
    class Recording(RoutingPolicy):
        name = "recording_for_test"

        def __init__(self) -> None:
            self.routed: list[tuple[RouteRequest, str]] = []

        def _choose(self, candidates, request):
            return candidates[-1]

        def on_routed(self, request, replica):
            self.routed.append((request, replica.replica_id))

    policy = Recording()
    request = RouteRequest("d-1", prompt_text="hello")
    replicas = [ReplicaView("a", "u", 0, True), ReplicaView("b", "u", 0, True)]
    assert policy.choose(replicas, request).replica_id == "b"
    assert policy.choose(replicas, request, exclude=frozenset({"b"})).replica_id == "a"
    assert policy.choose(replicas, request, exclude=frozenset({"a", "b"})) is None
    assert policy.routed == [(request, "b"), (request, "a")]


def test_only_cache_aware_policies_need_the_prompt():
    needs = {name: get_policy(name).needs_prompt for name in ["round_robin", "least_load", "prefix_aware", "kv_aware"]}
    assert needs == {"round_robin": False, "least_load": False, "prefix_aware": True, "kv_aware": True}


def test_only_kv_aware_needs_block_hashes():
    needs = {name: get_policy(name).needs_block_hashes
             for name in ["round_robin", "least_load", "prefix_aware", "kv_aware"]}
    assert needs == {"round_robin": False, "least_load": False, "prefix_aware": False, "kv_aware": True}


def test_new_fields_default_so_existing_callers_keep_working():
    view = ReplicaView("a", "u", 3, True)
    request = RouteRequest("d-1")
    assert view.cached_block_hashes is None
    assert request.prompt_text is None and request.block_hashes == () and request.prompt_key is None
