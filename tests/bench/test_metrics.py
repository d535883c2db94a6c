"""Summaries from records: percentiles, throughputs, goodput, concurrency, error samples."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from slipway.bench.metrics import MAX_ERROR_SAMPLES, distribution, max_in_flight, meets_slos, percentile, summarize
from slipway.bench.record import RequestRecord


def _ok(index: int, ttft: float, e2el: float, output_tokens: int = 11, input_tokens: int = 100,
        sent: float = 0.0) -> RequestRecord:
    tpot = (e2el - ttft) / (output_tokens - 1) if output_tokens > 1 else None
    return RequestRecord(index=index, success=True, status=200, released_ms=sent, sent_ms=sent, ended_ms=sent + e2el,
                         input_tokens=input_tokens, output_tokens=output_tokens, expected_output_tokens=output_tokens,
                         usage_reported=True, ttft_ms=ttft, e2el_ms=e2el, tpot_ms=tpot,
                         itl_ms=[tpot] * (output_tokens - 1) if tpot else [])


def _failed(index: int, error: str, sent: float = 0.0) -> RequestRecord:
    return RequestRecord(index=index, success=False, error=error, status=500, released_ms=sent, sent_ms=sent,
                         ended_ms=sent + 1, input_tokens=100, expected_output_tokens=10)


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=50), st.sampled_from([0, 50, 90, 99, 100]))
def test_percentile_matches_numpy(values, q):
    assert percentile(sorted(values), q) == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-9)


def test_distribution_skips_missing_values():
    dist = distribution([None, 10.0, 20.0, 30.0, None])
    assert (dist.count, dist.mean, dist.p50, dist.max) == (3, 20.0, 20.0, 30.0)
    assert dist.p90 == pytest.approx(28.0)
    assert distribution([None]) is None


def test_summary_throughputs_count_only_completed_requests():
    records = [_ok(0, ttft=100, e2el=1100), _ok(1, ttft=200, e2el=2200), _failed(2, "HTTP 500: boom")]
    s = summarize(records, duration_s=4.0)

    assert (s.completed, s.failed) == (2, 1)
    assert (s.total_input_tokens, s.total_output_tokens) == (200, 22)
    assert s.request_throughput == 0.5
    assert s.output_throughput == 5.5
    assert s.total_token_throughput == 55.5
    assert s.ttft_ms.mean == 150 and s.e2el_ms.p50 == 1650
    assert s.tpot_ms.mean == pytest.approx((100 + 200) / 2)
    assert s.itl_ms.count == 20
    assert s.goodput is None


def test_goodput_counts_requests_meeting_every_slo():
    records = [
        _ok(0, ttft=100, e2el=600),     # tpot 50
        _ok(1, ttft=600, e2el=1100),    # ttft too slow
        _ok(2, ttft=100, e2el=1100),    # tpot 100, too slow
        _ok(3, ttft=100, e2el=5000, output_tokens=1),  # one token: no tpot, meets it
        _failed(4, "timeout"),
    ]
    s = summarize(records, duration_s=2.0, slos_ms={"ttft": 500, "tpot": 50})

    assert [meets_slos(r, {"ttft": 500, "tpot": 50}) for r in records] == [True, False, False, True, False]
    assert s.goodput == 1.0
    assert s.goodput_slos_ms == {"ttft": 500, "tpot": 50}
    assert summarize(records, duration_s=2.0, slos_ms={"e2el": 1000}).goodput == 0.5


def test_error_samples_are_counted_and_bounded():
    records = [_failed(i, f"error {i % (MAX_ERROR_SAMPLES + 5)}") for i in range(100)]
    records += [_failed(100 + i, "error 0") for i in range(3)]
    s = summarize(records, duration_s=1.0)

    assert s.failed == 103
    assert len(s.errors) == MAX_ERROR_SAMPLES
    assert s.errors[0].message == "error 0" and s.errors[0].count == 7 + 3


def test_max_in_flight_from_send_and_end_times():
    records = [_ok(0, 1, 100, sent=0), _ok(1, 1, 100, sent=50), _ok(2, 1, 100, sent=100), _failed(3, "x", sent=60)]
    # [0,100] [50,150] [60,61] [100,200]: three at once at 60; request 2 starts as request 0 ends.
    assert max_in_flight(records) == 3
    assert max_in_flight([]) == 0


def test_a_run_of_zero_duration_reports_zero_rates():
    s = summarize([], duration_s=0.0)
    assert (s.completed, s.request_throughput, s.ttft_ms) == (0, 0.0, None)
