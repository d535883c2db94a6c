"""Summaries of an eval run and the no-regression gate between two runs. Pure functions.

Confidence intervals are 95%:

- pass rate: the Wilson score interval. Unlike the normal approximation it stays inside [0, 1] and
  is honest at 0 or n passes and at small n, which eval suites often have.
- mean score: the Student t-interval, mean +- t(0.975, n-1) * s / sqrt(n), clipped to [0, 1]. It is
  deterministic (a bootstrap would need a seed and be slower for the same answer on these sizes).
  With one sample the spread is unknown and the interval is the whole [0, 1].

The gate compares means: the candidate holds when its mean >= the baseline's mean - tolerance.
Intervals are reported alongside for people to judge noise; the gate does not use them, so its
decision is simple to predict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from slipway.evals.graders import GradeResult

Z_95 = 1.959963984540054
# t(0.975, df) for df = 1..30; above 30 the normal quantile is within 2% of t.
T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)


def t_quantile_975(degrees_of_freedom: int) -> float:
    """The 97.5% quantile of Student's t (from a table up to 30 degrees of freedom, then the normal)."""
    if degrees_of_freedom < 1:
        raise ValueError("degrees_of_freedom must be >= 1")
    return T_975[degrees_of_freedom - 1] if degrees_of_freedom <= len(T_975) else Z_95


def wilson_interval(passes: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion; (0, 1) when there are no trials."""
    if not 0 <= passes <= total:
        raise ValueError(f"passes must be in [0, total], got {passes} of {total}")
    if total == 0:
        return (0.0, 1.0)
    p = passes / total
    z2 = z * z
    denominator = 1 + z2 / total
    centre = (p + z2 / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(scores: Sequence[float]) -> tuple[float, float]:
    """The 95% t-interval of the mean of scores in [0, 1], clipped to [0, 1]."""
    n = len(scores)
    if n < 2:
        return (0.0, 1.0)
    mean = math.fsum(scores) / n
    variance = math.fsum((s - mean) ** 2 for s in scores) / (n - 1)
    half = t_quantile_975(n - 1) * math.sqrt(variance / n)
    return (max(0.0, mean - half), min(1.0, mean + half))


@dataclass(frozen=True)
class RunSummary:
    """One grader's results over one run."""

    num_samples: int
    mean_score: float
    mean_score_ci: tuple[float, float]
    num_passed: int
    pass_rate: float
    pass_rate_ci: tuple[float, float]


def summarise(results: Iterable[GradeResult]) -> RunSummary:
    """Mean score and pass rate with their 95% intervals; an empty run has zeros and (0, 1) intervals."""
    results = list(results)
    n = len(results)
    scores = [r.score for r in results]
    passed = sum(1 for r in results if r.passed)
    return RunSummary(
        num_samples=n,
        mean_score=math.fsum(scores) / n if n else 0.0,
        mean_score_ci=mean_interval(scores),
        num_passed=passed,
        pass_rate=passed / n if n else 0.0,
        pass_rate_ci=wilson_interval(passed, n),
    )


@dataclass(frozen=True)
class Comparison:
    """A candidate run against a baseline run, and the no-regression gate's decision."""

    mean_score_difference: float
    pass_rate_difference: float
    tolerance: float
    no_regression: bool
    reason: str


def compare(baseline: RunSummary, candidate: RunSummary, *, tolerance: float = 0.0) -> Comparison:
    """Differences (candidate - baseline) and whether candidate.mean >= baseline.mean - tolerance."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    difference = candidate.mean_score - baseline.mean_score
    if candidate.num_samples == 0:
        holds, reason = False, "the candidate run has no samples; run the suite before gating"
    else:
        # A tiny epsilon so that a difference of exactly -tolerance, after float rounding, still holds.
        holds = difference >= -tolerance - 1e-12
        verb = "holds" if holds else "fails"
        reason = (f"no-regression {verb}: candidate mean {candidate.mean_score:.4f} vs baseline "
                  f"{baseline.mean_score:.4f} (difference {difference:+.4f}, tolerance {tolerance:.4f})")
    return Comparison(
        mean_score_difference=difference,
        pass_rate_difference=candidate.pass_rate - baseline.pass_rate,
        tolerance=tolerance,
        no_regression=holds,
        reason=reason,
    )
