"""The report as JSON (--out) and as Rich tables."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pytest
from rich.console import Console

from slipway.bench.config import BenchConfig
from slipway.bench.metrics import summarize
from slipway.bench.record import RequestRecord
from slipway.bench.report import BenchReport, render_report
from slipway.errors import SpecError


def _report() -> BenchReport:
    records = [
        RequestRecord(index=0, success=True, status=200, released_ms=0, sent_ms=1, ended_ms=301, input_tokens=10,
                      output_tokens=3, expected_output_tokens=3, usage_reported=True, ttft_ms=100, e2el_ms=300,
                      tpot_ms=100, itl_ms=[100, 100]),
        RequestRecord(index=1, success=False, error="HTTP 503: no replica", status=503, released_ms=0, sent_ms=1,
                      ended_ms=2, input_tokens=10, expected_output_tokens=3),
    ]
    config = BenchConfig(model="m", api_key="sk-slw-secret", goodput={"ttft": 500})
    return BenchReport(config=config, model="m", started_at=datetime(2025, 1, 2, tzinfo=timezone.utc),
                       summary=summarize(records, 1.0, config.goodput), records=records)


def test_json_holds_config_summary_and_records_without_the_key(tmp_path):
    path = _report().write_json(tmp_path / "out" / "run.json")
    text = path.read_text()
    data = json.loads(text)

    assert "sk-slw-secret" not in text
    assert set(data) == {"config", "model", "started_at", "summary", "records"}
    assert data["config"]["request_rate"] == "Infinity" and data["config"]["goodput"] == {"ttft": 500.0}
    assert data["summary"]["completed"] == 1 and data["summary"]["failed"] == 1
    assert set(data["summary"]["ttft_ms"]) == {"count", "mean", "p50", "p90", "p99", "max"}
    assert data["summary"]["goodput"] == 1.0
    assert data["summary"]["errors"] == [{"message": "HTTP 503: no replica", "count": 1}]
    assert [r["index"] for r in data["records"]] == [0, 1]
    assert data["records"][0]["itl_ms"] == [100.0, 100.0]
    assert BenchReport.model_validate_json(text).summary == _report().summary


def test_an_unwritable_out_path_is_a_spec_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SpecError, match="could not write the report"):
        _report().write_json(tmp_path / "file" / "run.json")


def test_tables_show_the_numbers_and_the_errors():
    out = io.StringIO()
    render_report(_report(), Console(file=out, width=160))
    text = out.getvalue()

    assert "Successful requests" in text and "Failed requests" in text
    assert "Goodput (req/s, ttft<=500ms)" in text
    assert "100.00" in text  # TTFT mean
    assert "HTTP 503: no replica" in text
