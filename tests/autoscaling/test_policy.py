"""The autoscaling policy on a fake clock: one replica carries 10 requests unless a test says otherwise."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings as hypothesis_settings
from hypothesis import strategies as st

from slipway.autoscaling import AutoscalingPolicy, AutoscalingState, LoadSample, PolicyConfig
from slipway.errors import SpecError
from slipway.spec.package import Autoscaling
from tests.autoscaling.loop import loop, quick, settings


def steady(load: float, now: float = 100.0, seconds: int = 10, queued: float = 0.0) -> list[LoadSample]:
    return [LoadSample(at=now - i, in_flight=load, queued=queued) for i in range(seconds)]


def decide(current: int, samples: list[LoadSample], now: float = 100.0, state: AutoscalingState | None = None,
           config: PolicyConfig | None = None, **changes: object):
    policy = AutoscalingPolicy(settings(**changes), config or quick())
    return policy.decide(samples, current, state or AutoscalingState(), now)


def test_capacity_is_concurrency_target_at_target_utilization():
    policy = AutoscalingPolicy(Autoscaling(max_replica=5, concurrency_target=8, target_utilization_percentage=70))
    assert policy.capacity == pytest.approx(5.6)
    decision, _ = policy.decide(steady(5.6 * 3), 2, AutoscalingState(), 100.0)
    assert decision.desired == 3  # exactly three replicas' worth needs three, not four


# -- scale up ------------------------------------------------------------------------------------


def test_scales_up_at_once_to_the_ceiling_of_the_average():
    run = loop(2)
    assert run.run(5, in_flight=30) == [3, 3, 3, 3, 3]
    assert "scaling up from 2 to 3" in run.history[0][2].reason and not run.history[0][2].panic


def test_average_counts_only_samples_inside_the_window():
    old_burst = [LoadSample(at=80.0 - i, in_flight=500, queued=0) for i in range(20)]
    future = [LoadSample(at=105.0, in_flight=500, queued=0)]
    decision, _ = decide(2, old_burst + steady(20) + future)
    assert decision.desired == 2


def test_queued_requests_count_as_demand():
    decision, _ = decide(1, steady(5, queued=10))
    assert decision.desired == 2


def test_tolerance_keeps_the_count_just_above_a_boundary():
    assert decide(2, steady(22))[0].desired == 2     # 2.2 replicas' worth is within 10%
    assert decide(2, steady(22.5))[0].desired == 3   # 2.25 is not


# -- panic -----------------------------------------------------------------------------------------


def test_a_burst_scales_up_within_the_panic_window_not_the_whole_window():
    burst = lambda now: 50.0 if now > 54 else 0.0  # noqa: E731
    run = loop(1, min_replica=1, autoscaling_window=60.0)
    counts = run.run(60, in_flight=burst)
    assert counts[53] == 1 and counts[59] == 5
    assert any(decision.panic for _, _, decision in run.history)
    assert "panic" in next(d.reason for _, _, d in run.history if d.panic)

    calm = loop(1, quick(panic_threshold=1000), min_replica=1, autoscaling_window=60.0)
    assert calm.run(60, in_flight=burst)[59] == 1  # without panic the 60 s average barely moved


def test_never_scales_down_while_in_panic():
    run = loop(1, min_replica=1, autoscaling_window=60.0, scale_down_delay=0)
    run.run(60, in_flight=lambda now: 50.0 if now > 54 else 0.0)
    peak = run.current
    run.run(120, in_flight=0.0)
    quiet_in_panic = [(count, d) for at, count, d in run.history if at > 60 and d.panic]
    assert quiet_in_panic, "load fell to zero while panic still held"
    assert all(count == peak for count, _ in quiet_in_panic)
    assert "no scale-down" in quiet_in_panic[-1][1].reason
    first_drop = next(d for _, count, d in run.history if count < peak)
    assert not first_drop.panic and run.current == 1


def test_panic_ends_a_hold_after_the_last_burst():
    run = loop(1, quick(panic_hold=5.0), min_replica=1, max_replica=1, autoscaling_window=60.0)
    run.run(10, in_flight=100.0)
    run.run(20, in_flight=0.0)
    # The 6 s burst average stays at 2x capacity until t=14 (two samples of 100 in (8, 14]); 5 s more.
    assert [at for at, _, d in run.history if d.panic][-1] == 18.0
    assert run.history[16][2].reason.startswith("panic: load needs 6 replicas; holding at max_replica 1")


# -- scale down ----------------------------------------------------------------------------------


def test_scale_down_waits_for_the_delay():
    run = loop(4, scale_down_delay=30.0)
    run.run(60, in_flight=8.0)
    assert run.changes() == [(31.0, 1)]  # low from the first decision at t=1
    waiting = run.history[10][2]
    assert waiting.desired == 4 and "scale_down_delay is 30s" in waiting.reason


def test_load_coming_back_restarts_the_delay():
    run = loop(4, autoscaling_window=1.0, scale_down_delay=30.0)
    run.run(60, in_flight=lambda now: 40.0 if now == 15 else 8.0)
    assert run.changes() == [(46.0, 1)]


def test_scale_down_never_goes_below_what_the_load_needed_while_low():
    run = loop(10, autoscaling_window=1.0, scale_down_delay=10.0)
    run.run(40, in_flight=lambda now: 50.0 if now <= 5 else 10.0)
    # low from t=1 needing 6 (5 with 10% headroom), then 2: first onto 6, then time again for 2
    assert run.changes() == [(11.0, 6), (22.0, 2)]


@pytest.mark.parametrize(("rate", "expected"), [(0.5, [5, 3, 2, 1, 0]), (0.25, [8, 6, 5, 4, 3])])
def test_scale_down_removes_at_most_the_rate_per_decision(rate, expected):
    run = loop(10, quick(max_scale_down_rate=rate), scale_down_delay=0.0)
    assert run.run(5, in_flight=0.0) == expected


def test_scale_down_steps_wait_the_interval():
    run = loop(10, quick(max_scale_down_rate=0.5, scale_down_interval=30.0), scale_down_delay=0.0)
    run.run(130, in_flight=0.0)
    assert run.changes() == [(1.0, 5), (31.0, 3), (61.0, 2), (91.0, 1), (121.0, 0)]


def test_interval_also_follows_a_scale_up():
    run = loop(1, quick(scale_down_interval=20.0), autoscaling_window=1.0, scale_down_delay=0.0)
    run.run(30, in_flight=lambda now: 30.0 if now == 1 else 0.0)
    assert run.changes() == [(1.0, 3), (21.0, 0)]


def test_a_fresh_state_delays_a_scale_down_and_never_causes_one():
    run = loop(4, scale_down_delay=30.0)
    run.run(20, in_flight=0.0)
    run.state = AutoscalingState()  # the control plane restarted
    run.run(40, in_flight=0.0)
    assert run.changes() == [(51.0, 0)]


# -- zero ----------------------------------------------------------------------------------------


def test_scales_to_zero_after_the_delay_and_back_on_queued_demand():
    run = loop(1, scale_down_delay=30.0)
    run.run(40, in_flight=0.0)
    assert run.changes() == [(31.0, 0)]
    assert run.run(1, queued=3.0) == [1]
    assert "cold start" in run.last.reason


def test_a_deep_queue_at_zero_starts_enough_replicas_at_once():
    run = loop(0)
    assert run.run(1, queued=45.0) == [5]


def test_stays_at_zero_without_demand():
    run = loop(0)
    assert run.run(30, in_flight=0.0) == [0] * 30


def test_a_trickle_of_requests_keeps_one_replica():
    run = loop(1, scale_down_delay=30.0)
    assert set(run.run(200, in_flight=lambda now: 1.0 if now % 5 == 0 else 0.0)) == {1}


def test_min_replica_one_never_scales_to_zero():
    run = loop(3, min_replica=1, scale_down_delay=5.0)
    run.run(60, in_flight=0.0)
    assert run.current == 1


# -- bounds and missing data -----------------------------------------------------------------------


def test_never_above_max_replica():
    run = loop(1, max_replica=3)
    counts = run.run(30, in_flight=1000.0)
    assert max(counts) == 3 and counts[-1] == 3
    assert "max_replica" in run.last.reason


@pytest.mark.parametrize(("current", "expected"), [(5, 3), (0, 2)])
def test_a_count_outside_the_bounds_moves_inside_at_once(current, expected):
    decision, state = decide(current, steady(15), min_replica=2, max_replica=3, scale_down_delay=900)
    assert decision.desired == expected and state.last_scaled_at == 100.0
    assert "outside min_replica 2 .. max_replica 3" in decision.reason


@pytest.mark.parametrize("samples", [[], [LoadSample(at=10.0, in_flight=0, queued=0)]], ids=["none", "stale"])
def test_no_recent_sample_holds_and_never_counts_as_low(samples):
    decision, state = decide(3, samples, state=AutoscalingState(low_since=50.0, low_peak=1))
    assert decision.desired == 3 and "no load sample" in decision.reason
    assert not state.is_low


def test_negative_current_is_refused():
    with pytest.raises(SpecError, match="current replica count is -1"):
        decide(-1, steady(0))


# -- properties ----------------------------------------------------------------------------------

TOLERANCE = PolicyConfig().tolerance
SAFE_DOWN = TOLERANCE / (1 + TOLERANCE) * 0.999
SAFE_UP = TOLERANCE * 0.999


@hypothesis_settings(max_examples=200, deadline=None)
@given(replicas=st.integers(1, 20), level=st.floats(0.001, 1.0),
       noise=st.lists(st.floats(-SAFE_DOWN, SAFE_UP), min_size=1, max_size=40))
def test_noise_within_tolerance_never_changes_the_count(replicas, level, noise):
    base = (replicas - 1 + level) * 10  # any load that needs exactly `replicas`, boundaries included
    # No delay and no interval: only the dead band stands between noise and a change.
    run = loop(replicas, max_replica=40, scale_down_delay=0.0)
    for wobble in noise:
        run.run(1, in_flight=base * (1 + wobble))
    assert run.changes() == []


@hypothesis_settings(max_examples=150, deadline=None)
@given(loads=st.lists(st.floats(0, 200), min_size=1, max_size=90), start=st.integers(0, 8))
def test_invariants_under_any_load(loads, start):
    delay = 20.0
    run = loop(start, PolicyConfig(scale_down_interval=5.0), min_replica=1, max_replica=8, scale_down_delay=delay)
    for load in loads:
        run.run(1, in_flight=load)
    last_up, previous = None, start
    for at, count, decision in run.history:
        assert 1 <= count <= 8
        if count > previous:
            last_up = at
        elif count < previous:
            assert not decision.panic
            assert previous - count <= max(1, math.floor(previous * 0.5))
            assert last_up is None or at - last_up >= delay, "scaled down within scale_down_delay of a scale-up"
        previous = count
