"""Histogram arithmetic: deltas between scrapes, restarts, merging, and PromQL-style quantiles."""

from __future__ import annotations

import math

import pytest

from slipway.observe import histogram as h

BOUNDS = (0.1, 0.25, 0.5, 1.0)


def test_from_cumulative_keeps_the_lower_edge_of_each_non_empty_bucket():
    cumulative = {0.1: 0, 0.25: 0, 0.5: 4, 1.0: 4, math.inf: 5}
    assert h.from_cumulative(cumulative) == ((0.25, 0), (0.5, 4), (1.0, 0), (math.inf, 1))


def test_quantile_interpolates_inside_the_bucket_like_histogram_quantile():
    buckets = h.from_observations([0.3] * 10, BOUNDS)  # all in (0.25, 0.5]
    assert h.quantile(0.5, buckets) == pytest.approx(0.375)
    assert h.quantile(1.0, buckets) == pytest.approx(0.5)
    first = h.from_observations([0.05] * 4, BOUNDS)  # the first bucket starts at 0
    assert h.quantile(0.5, first) == pytest.approx(0.05)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound_and_empty_is_none():
    assert h.quantile(0.99, h.from_observations([0.2, 7.0, 9.0], BOUNDS)) == 1.0
    assert h.quantile(0.5, h.EMPTY) is None
    with pytest.raises(ValueError, match="outside"):
        h.quantile(1.5, h.EMPTY)


def test_p99_separates_a_slow_tail_from_the_median():
    buckets = h.from_observations([0.05] * 98 + [0.8, 0.9], BOUNDS)
    assert h.quantile(0.5, buckets) < 0.1 < 0.5 < h.quantile(0.99, buckets) <= 1.0


def test_delta_between_two_scrapes_and_none_after_a_restart():
    before = {0.1: 2, 0.5: 3, math.inf: 3}
    after = {0.1: 2, 0.5: 5, math.inf: 6}
    assert h.cumulative_delta(after, before) == ((0.1, 0), (0.5, 2), (math.inf, 1))
    assert h.cumulative_delta(after, None) == h.from_cumulative(after)
    assert h.cumulative_delta({0.1: 1, 0.5: 1, math.inf: 1}, before) is None


def test_merge_adds_bucket_by_bucket_also_across_different_bounds():
    a = h.from_observations([0.3, 0.3], BOUNDS)
    b = h.from_observations([0.3, 0.7], (0.5, 2.0))
    merged = h.merge(a, b)
    assert h.count(merged) == 4
    assert dict(merged)[0.5] == 3 and dict(merged)[2.0] == 1
    assert h.merge() == ()
