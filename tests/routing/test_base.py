"""The contract every registered policy keeps, checked with generated replica sets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slipway.errors import SpecError
from slipway.routing import ReplicaView, RouteRequest, RoutingPolicy, get_policy, known_policies, register_policy

REQUEST = RouteRequest("d-1")

replica_sets = st.lists(
    st.builds(ReplicaView, replica_id=st.sampled_from([f"r{i}" for i in range(8)]), url=st.just("http://x"),
              in_flight=st.integers(0, 50), healthy=st.booleans()),
    max_size=8, unique_by=lambda r: r.replica_id,
)
exclusions = st.frozensets(st.sampled_from([f"r{i}" for i in range(8)]))


@pytest.mark.parametrize("name", ["least_load", "round_robin"])
@settings(max_examples=300, deadline=None)
@given(replicas=replica_sets, exclude=exclusions, calls=st.integers(1, 5))
def test_choice_is_healthy_allowed_and_none_only_without_candidates(name, replicas, exclude, calls):
    policy = get_policy(name)
    candidates = {r.replica_id for r in replicas if r.healthy and r.replica_id not in exclude}
    for _ in range(calls):  # policies keep state between calls; the contract holds on every call
        chosen = policy.choose(replicas, REQUEST, exclude=exclude)
        if not candidates:
            assert chosen is None
        else:
            assert chosen is not None
            assert chosen.replica_id in candidates
            assert chosen in replicas


def test_unknown_policy_names_the_known_ones():
    with pytest.raises(SpecError) as caught:
        get_policy("fastest")
    assert "fastest" in caught.value.message
    assert "least_load" in caught.value.message and "round_robin" in caught.value.message


def test_get_policy_returns_a_fresh_instance_per_call():
    assert get_policy("least_load") is not get_policy("least_load")


def test_registered_policy_is_found_by_name():
    class First(RoutingPolicy):
        name = "first_for_test"

        def _choose(self, candidates, request):
            return candidates[0]

    register_policy(First.name, First)
    assert First.name in known_policies()
    replicas = [ReplicaView("a", "u", 0, False), ReplicaView("b", "u", 9, True)]
    assert get_policy(First.name).choose(replicas, REQUEST).replica_id == "b"
