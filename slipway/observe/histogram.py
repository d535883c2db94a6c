"""Histogram arithmetic on bucket counts: take scrapes apart, add them up, estimate quantiles.

A Prometheus histogram is exposed as *cumulative* counts per upper bound (`le`). Two readings
of the same histogram subtract to the observations made between them; those add across
replicas and across time; and a quantile is read off the sum the way PromQL's
`histogram_quantile` does it (linear inside the bucket that holds the rank).

    cumulative {le: count}  ──delta──►  Buckets ((le, count), ...)  ──merge──►  quantile(0.99, ...)

`Buckets` holds per-bucket (not cumulative) counts sorted by bound. Empty buckets are left out,
so a quiet interval costs nothing to keep, except the one just below a non-empty bucket, kept
at count 0 because its bound is that bucket's lower edge. Histograms with different bounds
still merge: each count stays at its own upper bound. Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

Buckets = tuple[tuple[float, float], ...]
"""Observations per bucket as (upper bound, count), bounds ascending; see the module docstring."""

EMPTY: Buckets = ()


def from_cumulative(cumulative: Mapping[float, float]) -> Buckets:
    """Per-bucket counts from cumulative counts per upper bound (a scrape's `_bucket` samples)."""
    per_bucket = []
    below = 0.0
    for bound in sorted(cumulative):
        per_bucket.append((bound, max(cumulative[bound] - below, 0.0)))
        below = max(cumulative[bound], below)
    return _trimmed(per_bucket)


def _trimmed(per_bucket: list[tuple[float, float]]) -> Buckets:
    """Drop empty buckets except those whose bound is the lower edge of a non-empty one."""
    kept = []
    for i, (bound, count) in enumerate(per_bucket):
        next_count = per_bucket[i + 1][1] if i + 1 < len(per_bucket) else 0.0
        if count > 0 or next_count > 0:
            kept.append((bound, count))
    return tuple(kept)


def cumulative_delta(current: Mapping[float, float], previous: Mapping[float, float] | None) -> Buckets | None:
    """The observations between two scrapes of one histogram (cumulative counts per bound).

    None when a count went down: the process restarted, so `current` alone is what it observed
    since (the caller decides whether to count that). With no `previous`, everything counts.
    """
    if previous is None:
        return from_cumulative(current)
    delta = {}
    for bound, count in current.items():
        before = previous.get(bound, 0.0)
        if count < before:
            return None
        delta[bound] = count - before
    return from_cumulative(delta)


def merge(*histograms: Buckets) -> Buckets:
    """The sum of several histograms' buckets (lower edges of every input kept)."""
    total: dict[float, float] = {}
    for histogram in histograms:
        for bound, count in histogram:
            total[bound] = total.get(bound, 0.0) + count
    return tuple(sorted(total.items()))


def count(histogram: Buckets) -> float:
    """How many observations the histogram holds."""
    return sum(c for _, c in histogram)


def quantile(q: float, histogram: Buckets) -> float | None:
    """The q-quantile (0 <= q <= 1) estimated from the buckets; None when there are no observations.

    As PromQL's histogram_quantile: find the bucket in which the rank q * total falls and
    interpolate linearly between its lower bound (the previous bound, or 0 for the first) and
    its upper bound. A rank in the +Inf bucket returns the highest finite bound.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q!r} is outside [0, 1]")
    total = count(histogram)
    if total <= 0:
        return None
    rank = q * total
    below, lower = 0.0, 0.0
    for bound, in_bucket in histogram:
        if in_bucket > 0 and below + in_bucket >= rank:
            if math.isinf(bound):
                return lower
            if bound <= 0 or lower >= bound:
                return bound
            return lower + (bound - lower) * ((rank - below) / in_bucket)
        below += in_bucket
        if not math.isinf(bound):
            lower = bound
    return lower


def parse_bound(text: str) -> float:
    """A `le` label value as a float ('+Inf' included)."""
    return math.inf if text in ("+Inf", "Inf", "inf") else float(text)


def from_observations(values: Iterable[float], bounds: Iterable[float]) -> Buckets:
    """Bucket raw observations against `bounds` (+Inf added); for tests and simulations."""
    edges = sorted({*bounds, math.inf})
    counts = dict.fromkeys(edges, 0.0)
    for value in values:
        counts[next(e for e in edges if value <= e)] += 1
    return _trimmed(list(counts.items()))
