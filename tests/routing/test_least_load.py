from __future__ import annotations

from collections import Counter

from slipway.routing import LeastLoad, ReplicaView, RouteRequest

REQUEST = RouteRequest("d-1")


def views(*loads: int, unhealthy: tuple[int, ...] = ()) -> list[ReplicaView]:
    return [ReplicaView(f"r{i}", f"http://r{i}", load, i not in unhealthy) for i, load in enumerate(loads)]


def test_picks_the_replica_with_fewest_in_flight():
    assert LeastLoad().choose(views(5, 2, 7), REQUEST).replica_id == "r1"


def test_equal_replicas_share_the_load_in_turn():
    policy = LeastLoad()
    picks = Counter(policy.choose(views(0, 0, 0), REQUEST).replica_id for _ in range(300))
    assert picks == {"r0": 100, "r1": 100, "r2": 100}


def test_ties_rotate_only_among_the_least_loaded():
    policy = LeastLoad()
    picks = {policy.choose(views(1, 4, 1), REQUEST).replica_id for _ in range(10)}
    assert picks == {"r0", "r2"}


def test_skips_unhealthy_and_excluded_even_when_least_loaded():
    policy = LeastLoad()
    replicas = views(0, 3, 9, unhealthy=(0,))
    assert policy.choose(replicas, REQUEST).replica_id == "r1"
    assert policy.choose(replicas, REQUEST, exclude=frozenset({"r1"})).replica_id == "r2"
    assert policy.choose(replicas, REQUEST, exclude=frozenset({"r1", "r2"})) is None
