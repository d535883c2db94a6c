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


def test_a_snapshot_in_which_a_replica_turns_ready_clears_its_mark():
    _, _, tracker = setup()
    tracker.on_snapshot(world(URLS, version=1))
    tracker.mark_down("d-echo-r0", now=0.0)
    tracker.on_snapshot(world(URLS, version=2))  # still ready, as before: no news about it
    assert tracker.is_marked_down("d-echo-r0", now=1.0)
    starting = world(URLS, version=3)
    starting.deployments[0].replicas[0].ready = False
    tracker.on_snapshot(starting)
    tracker.on_snapshot(world(URLS, version=4))  # restarted and ready again
    assert not tracker.is_marked_down("d-echo-r0", now=1.0)


def test_replicas_gone_from_the_snapshot_are_forgotten():
    _, _, tracker = setup()
    tracker.mark_down("gone", now=0.0)
    assert tracker.is_marked_down("gone", now=1.0)
    tracker.on_snapshot(world(URLS, version=2))
    assert tracker.state("gone", now=1.0) == "closed"


# -- circuit breaker ------------------------------------------------------------------------------

def choose_ids(route, tracker, now: float, times: int = 4) -> set[str]:
    return {tracker.choose(route, REQUEST, frozenset(), now=now).replica_id for _ in range(times)}


def test_the_breaker_opens_after_n_failures_in_a_row_only():
    _, route, tracker = setup()
    tracker = type(tracker)(cooldown=5.0, failures_to_open=3)
    tracker.failed("d-echo-r0", now=0.0)
    tracker.failed("d-echo-r0", now=0.0)
    tracker.succeeded("d-echo-r0")  # a success resets the count
    tracker.failed("d-echo-r0", now=0.0)
    tracker.failed("d-echo-r0", now=0.0)
    assert tracker.state("d-echo-r0", now=0.0) == "closed"
    assert choose_ids(route, tracker, now=0.0) == {"d-echo-r0", "d-echo-r1"}
    tracker.failed("d-echo-r0", now=0.0)
    assert tracker.state("d-echo-r0", now=1.0) == "open"
    assert choose_ids(route, tracker, now=1.0) == {"d-echo-r1"}


def test_after_the_cooldown_one_probe_goes_and_its_outcome_decides():
    _, route, tracker = setup()
    tracker.failed("d-echo-r0", now=0.0, at_once=True)
    assert tracker.state("d-echo-r0", now=5.0) == "half_open"
    chosen = [tracker.choose(route, REQUEST, frozenset(), now=5.0).replica_id for _ in range(6)]
    assert chosen.count("d-echo-r0") == 1, "exactly one probe while it is in flight"
    assert tracker.state("d-echo-r0", now=5.0) == "probing"

    tracker.failed("d-echo-r0", now=6.0)  # the probe failed: open for another cooldown
    assert tracker.state("d-echo-r0", now=10.9) == "open"
    assert tracker.state("d-echo-r0", now=11.0) == "half_open"
    assert "d-echo-r0" in choose_ids(route, tracker, now=11.0, times=2)
    tracker.succeeded("d-echo-r0")  # the probe answered: back in rotation
    assert tracker.state("d-echo-r0", now=11.0) == "closed"
    assert choose_ids(route, tracker, now=11.0) == {"d-echo-r0", "d-echo-r1"}


def test_a_probe_the_client_abandoned_lets_another_probe_go():
    _, route, tracker = setup()
    tracker.mark_down("d-echo-r0", now=0.0)
    assert "d-echo-r0" in choose_ids(route, tracker, now=5.0, times=2)
    assert tracker.state("d-echo-r0", now=5.0) == "probing"
    tracker.released("d-echo-r0")
    assert tracker.state("d-echo-r0", now=5.0) == "half_open"
