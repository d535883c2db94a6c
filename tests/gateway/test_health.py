"""ReplicaTracker: in-flight counts and passive health marks (time passed in)."""

from __future__ import annotations

from slipway.gateway.health import ReplicaTracker
from slipway.gateway.table import RouteTable
from slipway.routing import RouteRequest
from tests.gateway.conftest import world

URLS = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
REQUEST = RouteRequest("d-echo")


def setup():
    table = RouteTable.build(world(URLS))
    return table, table.deployments["d-echo"], ReplicaTracker(cooldown=5.0)


def test_in_flight_counts_steer_least_load():
    _, route, tracker = setup()
    tracker.begin("d-echo-r0", "d-echo")
    for _ in range(3):
        assert tracker.choose(route, REQUEST, frozenset(), now=0.0).replica_id == "d-echo-r1"
    tracker.end("d-echo-r0", "d-echo")
    assert tracker.in_flight == {} and tracker.in_flight_by_deployment == {}


def test_marks_expire_after_the_cooldown():
    _, route, tracker = setup()
    tracker.mark_down("d-echo-r0", now=100.0)
    assert {tracker.choose(route, REQUEST, frozenset(), now=101.0).replica_id for _ in range(4)} == {"d-echo-r1"}
    assert {tracker.choose(route, REQUEST, frozenset(), now=105.1).replica_id for _ in range(4)} == {
        "d-echo-r0", "d-echo-r1"}


def test_marked_replicas_are_still_tried_when_nothing_else_is_left():
    _, route, tracker = setup()
    tracker.mark_down("d-echo-r0", now=0.0)
    tracker.mark_down("d-echo-r1", now=0.0)
    assert tracker.choose(route, REQUEST, frozenset(), now=1.0) is not None
    assert tracker.choose(route, REQUEST, frozenset({"d-echo-r0"}), now=1.0).replica_id == "d-echo-r1"
    assert tracker.choose(route, REQUEST, frozenset({"d-echo-r0", "d-echo-r1"}), now=1.0) is None


def test_a_newer_snapshot_saying_ready_clears_the_mark():
    _, _, tracker = setup()
    tracker.mark_down("d-echo-r0", now=0.0)
    tracker.mark_down("gone", now=0.0)
    tracker.on_snapshot(world(URLS, version=2))
    assert not tracker.is_marked_down("d-echo-r0", now=1.0)
    assert tracker.is_marked_down("gone", now=1.0)  # not said ready: the mark runs its course
