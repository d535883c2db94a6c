"""MetricHistory with a fake clock: bucketing, the downsampling rule, exact merges, memory bounds."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from slipway.observe import histogram as h
from slipway.observe.history import HistoryConfig, MetricHistory, MetricSample, Tier

BOUNDS = (0.01, 0.05, 0.1, 0.5, 1.0)
T0 = 1_700_000_040.0  # a multiple of 60: buckets start on it


def busy(seconds=1.0, requests=10, errors=0, latency=0.03, **more) -> MetricSample:
    return MetricSample(seconds=seconds, requests=requests, errors=errors,
                        latency=h.from_observations([latency] * requests, BOUNDS), **more)


def test_samples_of_one_bucket_add_up():
    history = MetricHistory()
    history.record("d", busy(requests=10, errors=1, in_flight=2, replicas_ready=1, replicas_desired=2), T0 + 1)
    history.record("d", busy(requests=30, errors=1, latency=0.3, in_flight=4, replicas_ready=2, replicas_desired=2,
                             output_tokens=120.0), T0 + 2)
    [point] = history.series("d", T0, T0 + 3)
    assert (point.t, point.step) == (T0, 5)
    assert point.requests_per_second == 20.0               # 40 requests over 2 s
    assert point.error_rate == pytest.approx(2 / 40)
    assert 0.05 < point.latency_p50_seconds <= 0.5          # 30 of 40 took 0.3 s
    assert point.latency_p99_seconds == pytest.approx(0.5, rel=0.05)
    assert point.output_tokens_per_second == 60.0
    assert point.in_flight == 3.0                           # mean of the gauge
    assert (point.replicas_ready, point.replicas_desired) == (2, 2)  # last value
    assert point.ttft_p50_seconds is None and point.queued is None


def test_nothing_measured_reads_none_not_zero():
    history = MetricHistory()
    history.record("d", MetricSample(seconds=1.0), T0)
    [point] = history.series("d", T0 - 10, T0)
    assert point.requests_per_second == 0.0
    assert point.error_rate is None and point.latency_p50_seconds is None
    assert point.output_tokens_per_second is None and point.in_flight is None


def test_downsampling_rule_5s_for_15_minutes_then_1_minute():
    history = MetricHistory()
    now = T0
    for second in range(40 * 60):                             # 40 minutes, one sample a second
        now = T0 + second
        history.record("d", busy(requests=2), now)
    points = history.series("d", now - 3600, now)
    coarse = [p for p in points if p.step == 60]
    fine = [p for p in points if p.step == 5]
    assert coarse and fine and points == coarse + fine         # coarse first, no interleaving
    # Every moment is in exactly one tier: the 1-minute buckets end where the 5 s ones begin.
    assert coarse[-1].t + 60 == fine[0].t
    assert all(b.t - a.t == 60 for a, b in zip(coarse, coarse[1:]))
    assert all(b.t - a.t == 5 for a, b in zip(fine, fine[1:]))
    # A minute moves to tier 1 once all of it is more than 15 minutes old, not before.
    assert now - 900 - 60 < fine[0].t <= now - 900
    assert fine[0].t % 60 == 0
    assert {p.requests_per_second for p in points} == {2.0}   # rates survive the merge
    assert len(coarse) == (fine[0].t - T0) / 60


def test_a_merged_minute_reads_the_quantile_of_all_its_requests():
    history = MetricHistory()
    fast, slow = h.from_observations([0.03] * 99, BOUNDS), h.from_observations([0.8], BOUNDS)
    for second in range(60):
        history.record("d", MetricSample(seconds=1, requests=100, latency=h.merge(fast, slow)), T0 + second)
    history.record("d", MetricSample(seconds=1), T0 + 60 + 900 + 1)  # the first minute is now old
    [minute] = [p for p in history.series("d", T0, T0 + 961) if p.step == 60]
    expected = h.merge(*[h.merge(fast, slow)] * 60)
    assert minute.latency_p99_seconds == pytest.approx(h.quantile(0.99, expected))
    assert minute.latency_p50_seconds == pytest.approx(h.quantile(0.5, expected))
    assert minute.requests_per_second == 100
    # Once later minutes follow it, the minute keeps only its quantiles: they read the same.
    history.record("d", MetricSample(seconds=1), T0 + 960 + 60 + 900 + 1)   # folds the minute at 960 too
    first = history.series("d", T0, T0 + 1921)[0]
    assert history._timelines["d"].tiers[1][0].quantiles is not None        # sealed: histograms let go
    assert first == minute


def test_history_older_than_a_day_is_dropped_and_buckets_stay_bounded():
    config = HistoryConfig()
    history = MetricHistory(config)
    now = T0
    for step in range(26 * 3600 // 5):                       # 26 hours, one sample every 5 s
        now = T0 + step * 5
        history.record("d", busy(requests=1), now)
        assert history.bucket_count("d") <= config.max_buckets_per_deployment()
    points = history.series("d", now - 2 * 86_400, now)
    assert points[0].t >= now - 86_400 - 60
    assert history.bucket_count("d") <= 24 * 60 + 15 * 12 + 12 + 2


def test_the_deployment_recorded_longest_ago_goes_first_past_max_deployments():
    history = MetricHistory(HistoryConfig(max_deployments=2))
    history.record("a", busy(), T0)
    history.record("b", busy(), T0 + 1)
    history.record("a", busy(), T0 + 2)                      # a is now the most recent
    history.record("c", busy(), T0 + 3)
    assert history.deployment_ids() == ["a", "c"]
    assert history.series("b", T0, T0 + 5) == []


def test_prune_drops_deployments_whose_history_aged_out():
    history = MetricHistory(HistoryConfig(tiers=(Tier(resolution=5, keep=60),)))
    history.record("old", busy(), T0)
    history.record("new", busy(), T0 + 100)
    history.prune(T0 + 100)
    assert history.deployment_ids() == ["new"]
    history.forget("new")
    assert history.bucket_count() == 0


def test_a_sample_older_than_the_newest_bucket_is_refused():
    history = MetricHistory()
    assert history.record("d", busy(), T0 + 10)
    assert not history.record("d", busy(), T0)
    assert history.record("d", busy(), T0 + 10)              # the same bucket is fine


def test_series_is_cut_to_the_window():
    history = MetricHistory()
    for second in range(0, 120, 5):
        history.record("d", busy(), T0 + second)
    points = history.series("d", T0 + 60, T0 + 120)
    assert points[0].t == T0 + 60 and points[-1].t == T0 + 115


@pytest.mark.parametrize("tiers, words", [
    ((Tier(resolution=5, keep=900), Tier(resolution=7, keep=3600)), "not a multiple"),
    ((Tier(resolution=5, keep=30), Tier(resolution=60, keep=3600)), "cannot fill"),
    ((Tier(resolution=60, keep=30),), "shorter than one"),
    ((), "tiers is empty"),
])
def test_bad_tiers_say_what_to_change(tiers, words):
    with pytest.raises(ValidationError, match=words):
        HistoryConfig(tiers=tiers)
