"""The promotion gate: whether a candidate deployment may replace production, from eval scores. Pure.

    slipway promote MODEL --deployment N --gate SUITE:MIN[,no-regression]

    parse_gate("qa:0.8,no-regression")  ->  GateSpec(suite="qa", min_score=0.8, no_regression=True)
    decide(spec, candidate_mean=0.9, production_mean=0.85)  ->  GateDecision(promote=True, ...)

The candidate passes when its mean score is at least `min_score` and, with no-regression, at least
production's mean. A model with nothing in production has nothing to regress from: that check
passes and says so. Scores are compared as computed (with a 1e-12 allowance for float rounding);
confidence intervals are shown to people beside the scores but do not enter the decision, so the
decision is easy to predict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from slipway.errors import SpecError

NO_REGRESSION = "no-regression"
_EPSILON = 1e-12


@dataclass(frozen=True)
class GateSpec:
    """What a promotion has to pass."""

    suite: str
    """Name (or id) of the eval suite run on both deployments."""
    min_score: float
    """The candidate's mean score must be at least this, in [0, 1]."""
    no_regression: bool = False
    """The candidate's mean score must also be at least production's."""


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict and the one line that explains it."""

    promote: bool
    candidate_mean: float
    production_mean: float | None
    message: str


def parse_gate(text: str) -> GateSpec:
    """`SUITE:MIN[,no-regression]` as a GateSpec; SpecError says what is wrong and how to write it."""
    usage = "write it as SUITE:MIN or SUITE:MIN,no-regression, e.g. qa:0.8,no-regression"
    head, *options = [part.strip() for part in text.split(",")]
    suite, sep, minimum = head.rpartition(":")
    if not sep or not suite or not minimum:
        raise SpecError(f"gate {text!r} has no minimum score; {usage}", code="invalid_gate")
    try:
        min_score = float(minimum)
    except ValueError:
        raise SpecError(f"gate {text!r}: minimum {minimum!r} is not a number; {usage}", code="invalid_gate") from None
    if not 0.0 <= min_score <= 1.0 or math.isnan(min_score):
        raise SpecError(f"gate {text!r}: minimum {min_score} must be between 0 and 1 (a mean score)",
                        code="invalid_gate")
    unknown = [o for o in options if o != NO_REGRESSION]
    if unknown:
        raise SpecError(f"gate {text!r}: unknown option {unknown[0]!r}; the only option is {NO_REGRESSION}",
                        code="invalid_gate")
    return GateSpec(suite=suite, min_score=min_score, no_regression=NO_REGRESSION in options)


def decide(spec: GateSpec, candidate_mean: float, production_mean: float | None) -> GateDecision:
    """Promote when candidate >= min_score and, with no-regression, candidate >= production."""
    scores = f"candidate {candidate_mean:.4f}, production " + (
        f"{production_mean:.4f}" if production_mean is not None else "none (nothing serves production)")
    failures = []
    if candidate_mean < spec.min_score - _EPSILON:
        failures.append(f"candidate mean {candidate_mean:.4f} is below the minimum {spec.min_score:.4f}")
    if spec.no_regression and production_mean is not None and candidate_mean < production_mean - _EPSILON:
        failures.append(f"candidate mean {candidate_mean:.4f} is below production's {production_mean:.4f}")
    if failures:
        message = f"gate {spec.suite!r} refused the promotion: {'; '.join(failures)} ({scores})"
        return GateDecision(False, candidate_mean, production_mean, message)
    checks = f"mean >= {spec.min_score:.4f}" + (" and no regression" if spec.no_regression else "")
    return GateDecision(True, candidate_mean, production_mean, f"gate {spec.suite!r} passed ({checks}): {scores}")
