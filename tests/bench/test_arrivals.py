"""Release times: gamma/Poisson at a rate, everything at once, and trace replay."""

from __future__ import annotations

import math
import statistics

import pytest

from slipway.bench.arrivals import rate_offsets, trace_offsets
from slipway.bench.traces import TraceRow


def test_infinite_rate_releases_everything_at_zero():
    assert rate_offsets(4, math.inf) == [0.0, 0.0, 0.0, 0.0]


def test_poisson_gaps_have_the_rate_as_mean_and_unit_variation():
    offsets = rate_offsets(20_000, request_rate=10.0, seed=1)
    gaps = [b - a for a, b in zip(offsets, offsets[1:])]

    assert offsets[0] == 0.0 and all(g >= 0 for g in gaps)
    assert statistics.fmean(gaps) == pytest.approx(0.1, rel=0.03)
    # An exponential's standard deviation equals its mean (coefficient of variation 1).
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, rel=0.05)


def test_burstiness_changes_the_spread_not_the_rate():
    def cv(burstiness: float) -> tuple[float, float]:
        offsets = rate_offsets(20_000, request_rate=5.0, burstiness=burstiness, seed=2)
        gaps = [b - a for a, b in zip(offsets, offsets[1:])]
        return statistics.fmean(gaps), statistics.pstdev(gaps) / statistics.fmean(gaps)

    (bursty_mean, bursty_cv), (even_mean, even_cv) = cv(0.25), cv(4.0)
    assert bursty_mean == pytest.approx(0.2, rel=0.05) and even_mean == pytest.approx(0.2, rel=0.05)
    assert bursty_cv == pytest.approx(2.0, rel=0.1)   # 1/sqrt(k)
    assert even_cv == pytest.approx(0.5, rel=0.1)


def test_equal_seeds_give_equal_arrivals():
    assert rate_offsets(50, 3.0, seed=7) == rate_offsets(50, 3.0, seed=7)
    assert rate_offsets(50, 3.0, seed=7) != rate_offsets(50, 3.0, seed=8)


def test_trace_offsets_replay_faster_with_speedup():
    rows = [TraceRow(0.0, 1, 1), TraceRow(1.5, 1, 1), TraceRow(4.0, 1, 1)]
    assert trace_offsets(rows) == [0.0, 1.5, 4.0]
    assert trace_offsets(rows, speedup=2.0) == [0.0, 0.75, 2.0]
