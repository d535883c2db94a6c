"""From request records to a run's summary: distributions, throughputs, goodput. Pure.

    request throughput   completed requests / duration
    output throughput    output tokens of completed requests / duration
    total throughput     (input + output tokens of completed requests) / duration
    goodput              completed requests meeting every SLO / duration
    TTFT, TPOT, E2EL     one value per completed request (TPOT only with 2+ output tokens)
    ITL                  every gap between text chunks of every completed request

The duration is the wall time from the run's start to its last response, passed in.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Sequence

from pydantic import BaseModel, Field

from slipway.bench.record import RequestRecord

MAX_ERROR_SAMPLES = 10
"""Distinct error messages kept in a summary; the rest are only counted."""


class Distribution(BaseModel):
    """Mean and percentiles of one metric, in milliseconds."""

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float


class ErrorSample(BaseModel):
    message: str
    count: int


class BenchSummary(BaseModel):
    """What a run measured, in the units its names say."""

    completed: int
    failed: int
    duration_s: float
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float = Field(description="Completed requests per second.")
    output_throughput: float = Field(description="Output tokens per second.")
    total_token_throughput: float = Field(description="Input plus output tokens per second.")
    goodput: float | None = Field(None, description="Requests per second meeting every SLO; None without SLOs.")
    goodput_slos_ms: dict[str, float] = Field(default_factory=dict)
    max_concurrency_seen: int = Field(0, description="Most requests in flight at once, from send and end times.")
    ttft_ms: Distribution | None = None
    tpot_ms: Distribution | None = None
    itl_ms: Distribution | None = None
    e2el_ms: Distribution | None = None
    errors: list[ErrorSample] = Field(default_factory=list, description="Most frequent error messages, with counts.")


def summarize(records: Sequence[RequestRecord], duration_s: float, slos_ms: dict[str, float] | None = None) -> BenchSummary:
    """The summary of a run whose requests produced `records` over `duration_s` seconds."""
    slos_ms = dict(slos_ms or {})
    done = [r for r in records if r.success]
    failed = [r for r in records if not r.success]
    input_tokens = sum(r.input_tokens for r in done)
    output_tokens = sum(r.output_tokens for r in done)
    per_second = (lambda n: n / duration_s) if duration_s > 0 else (lambda n: 0.0)
    errors = Counter(r.error or "unknown error" for r in failed)
    return BenchSummary(
        completed=len(done),
        failed=len(failed),
        duration_s=duration_s,
        total_input_tokens=input_tokens,
        total_output_tokens=output_tokens,
        request_throughput=per_second(len(done)),
        output_throughput=per_second(output_tokens),
        total_token_throughput=per_second(input_tokens + output_tokens),
        goodput=per_second(sum(meets_slos(r, slos_ms) for r in done)) if slos_ms else None,
        goodput_slos_ms=slos_ms,
        max_concurrency_seen=max_in_flight(records),
        ttft_ms=distribution(r.ttft_ms for r in done),
        tpot_ms=distribution(r.tpot_ms for r in done),
        itl_ms=distribution(gap for r in done for gap in r.itl_ms),
        e2el_ms=distribution(r.e2el_ms for r in done),
        errors=[ErrorSample(message=m, count=c) for m, c in errors.most_common(MAX_ERROR_SAMPLES)],
    )


def meets_slos(record: RequestRecord, slos_ms: dict[str, float]) -> bool:
    """True when a completed request is within every SLO; a missing TPOT (one token) meets it."""
    if not record.success:
        return False
    values = {"ttft": record.ttft_ms, "tpot": record.tpot_ms, "e2el": record.e2el_ms}
    return all(values[metric] is None or values[metric] <= limit for metric, limit in slos_ms.items())


def distribution(values: Iterable[float | None]) -> Distribution | None:
    """Mean, p50, p90, p99 and max of the values that are not None; None when there are none."""
    ordered = sorted(v for v in values if v is not None)
    if not ordered:
        return None
    return Distribution(
        count=len(ordered),
        mean=math.fsum(ordered) / len(ordered),
        p50=percentile(ordered, 50),
        p90=percentile(ordered, 90),
        p99=percentile(ordered, 99),
        max=ordered[-1],
    )


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile of sorted values, interpolating linearly between ranks (numpy's default)."""
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def max_in_flight(records: Sequence[RequestRecord]) -> int:
    """Most requests in flight at once, from each request's send and end times."""
    events = [(r.sent_ms, 1) for r in records] + [(r.ended_ms, -1) for r in records]
    # Ends sort before starts at equal times: a slot freed and taken at once is not two in flight.
    events.sort(key=lambda event: (event[0], event[1]))
    peak = current = 0
    for _, change in events:
        current += change
        peak = max(peak, current)
    return peak
