from __future__ import annotations

from slipway.routing import ReplicaView, RoundRobin, RouteRequest

REQUEST = RouteRequest("d-1")


def test_takes_each_healthy_replica_in_turn_whatever_its_load():
    replicas = [ReplicaView("a", "u", 100, True), ReplicaView("b", "u", 0, False), ReplicaView("c", "u", 0, True)]
    policy = RoundRobin()
    picks = [policy.choose(replicas, REQUEST).replica_id for _ in range(6)]
    assert sorted(picks) == ["a", "a", "a", "c", "c", "c"]
    assert all(picks[i] != picks[i + 1] for i in range(5))


def test_none_when_every_replica_is_excluded():
    replicas = [ReplicaView("a", "u", 0, True)]
    assert RoundRobin().choose(replicas, RouteRequest("d"), exclude=frozenset({"a"})) is None
    assert RoundRobin().choose([], RouteRequest("d")) is None
