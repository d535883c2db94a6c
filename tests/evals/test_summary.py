"""Run summaries: interval math against known values, and the no-regression gate."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slipway.evals.graders import GradeResult
from slipway.evals.summary import compare, mean_interval, summarise, t_quantile_975, wilson_interval


def test_wilson_interval_known_values():
    # Reference values from the closed form (also given by statsmodels' proportion_confint(method="wilson")).
    assert wilson_interval(5, 10) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-6)
    assert wilson_interval(10, 10) == pytest.approx((0.722467, 1.0), abs=1e-6)
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


@given(st.integers(0, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_contains_the_estimate_and_stays_in_unit_interval(case):
    passes, total = case
    low, high = wilson_interval(passes, total)
    assert 0.0 <= low <= high <= 1.0
    if total:
        assert low - 1e-12 <= passes / total <= high + 1e-12


def test_mean_interval_known_values():
    # Scores 0, 0.5, 1: mean 0.5, s = 0.5, t(0.975, 2) = 4.303, half-width 1.242, clipped to [0, 1].
    low, high = mean_interval([0.0, 0.5, 1.0])
    assert (low, high) == (0.0, 1.0)
    low, high = mean_interval([0.6, 0.7, 0.8, 0.7])
    s = (0.02 / 3) ** 0.5
    assert low == pytest.approx(0.7 - 3.182 * s / 2) and high == pytest.approx(0.7 + 3.182 * s / 2)
    assert mean_interval([0.3]) == (0.0, 1.0)
    assert mean_interval([0.4] * 50) == pytest.approx((0.4, 0.4))
    assert t_quantile_975(1) == 12.706 and t_quantile_975(1000) == pytest.approx(1.96, abs=1e-3)


def _results(*scores, threshold=0.5):
    return [GradeResult(s, s >= threshold, "") for s in scores]


def test_summarise_counts_mean_and_pass_rate():
    summary = summarise(_results(1.0, 0.0, 0.5, 1.0))
    assert summary.num_samples == 4 and summary.mean_score == 0.625
    assert summary.num_passed == 3 and summary.pass_rate == 0.75
    assert summary.pass_rate_ci == wilson_interval(3, 4)
    empty = summarise([])
    assert empty.num_samples == 0 and empty.mean_score == 0.0 and empty.pass_rate_ci == (0.0, 1.0)


@pytest.mark.parametrize("baseline, candidate, tolerance, holds", [
    ((0.8, 0.8), (0.8, 0.8), 0.0, True),
    ((0.8, 0.8), (0.9, 0.9), 0.0, True),
    ((0.8, 0.8), (0.7, 0.7), 0.0, False),
    ((0.8, 0.8), (0.7, 0.7), 0.1, True),     # exactly at the tolerance
    ((0.8, 0.8), (0.69, 0.69), 0.1, False),
])
def test_no_regression_gate(baseline, candidate, tolerance, holds):
    comparison = compare(summarise(_results(*baseline)), summarise(_results(*candidate)), tolerance=tolerance)
    assert comparison.no_regression is holds
    assert comparison.mean_score_difference == pytest.approx(sum(candidate) / 2 - sum(baseline) / 2)
    assert ("holds" if holds else "fails") in comparison.reason


def test_gate_fails_an_empty_candidate_and_rejects_negative_tolerance():
    baseline = summarise(_results(0.1))
    assert not compare(baseline, summarise([])).no_regression
    with pytest.raises(ValueError):
        compare(baseline, baseline, tolerance=-0.1)
