"""bench_command: CLI options in, a run out, --out written, a failed run fails the command."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from slipway.bench import bench_command
from slipway.errors import SpecError, UpstreamError

from .conftest import FAKE_MODEL


def test_a_run_writes_its_report(fake_openai, tmp_path):
    fake_openai.first_delay_s = fake_openai.token_delay_s = 0.0
    out = io.StringIO()
    report = bench_command(base_url=fake_openai.url, model=FAKE_MODEL, num_prompts=4, input_len=8, output_len=3,
                           max_concurrency=2, goodput=["ttft:5000 tpot:1000"], out=tmp_path / "run.json",
                           console=Console(file=out, width=140))

    data = json.loads((tmp_path / "run.json").read_text())
    assert report.summary.completed == 4
    assert data["summary"]["goodput_slos_ms"] == {"ttft": 5000.0, "tpot": 1000.0}
    assert data["config"]["max_concurrency"] == 2 and len(data["records"]) == 4
    assert "Wrote" in out.getvalue()


def test_api_key_comes_from_the_environment(fake_openai, monkeypatch):
    fake_openai.first_delay_s = fake_openai.token_delay_s = 0.0
    fake_openai.require_key = "sk-slw-env"
    monkeypatch.setenv("SLIPWAY_API_KEY", "sk-slw-env")
    assert bench_command(base_url=fake_openai.url, model=FAKE_MODEL, num_prompts=2, output_len=2).summary.completed == 2


def test_every_request_failing_fails_the_command_after_writing_the_report(fake_openai, tmp_path):
    with pytest.raises(UpstreamError, match=r"all 3 requests failed \(first error: HTTP 404"):
        bench_command(base_url=fake_openai.url, model="wrong", num_prompts=3, out=tmp_path / "run.json")
    assert json.loads((tmp_path / "run.json").read_text())["summary"]["failed"] == 3


def test_invalid_options_are_spec_errors():
    with pytest.raises(SpecError, match="METRIC:MILLISECONDS"):
        bench_command(goodput=["fast"])
    with pytest.raises(SpecError, match="max_concurrency"):
        bench_command(max_concurrency=0)
