"""Whole runs against the fake server: arrivals, the concurrency cap, chat turns, failures."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from slipway.bench import BenchConfig, benchmark, run_bench
from slipway.bench.runner import plan
from slipway.errors import UpstreamError

from .conftest import FAKE_MODEL


def _config(url: str, **fields) -> BenchConfig:
    defaults = dict(base_url=url, model=FAKE_MODEL, num_prompts=8, input_len=16, output_len=4)
    return BenchConfig(**(defaults | fields))


async def test_closed_loop_keeps_exactly_max_concurrency_in_flight(fake_openai):
    fake_openai.first_delay_s = fake_openai.token_delay_s = 0.02
    report = await benchmark(_config(fake_openai.url, num_prompts=12, max_concurrency=3))

    assert report.summary.completed == 12 and report.summary.failed == 0
    assert fake_openai.max_in_flight == 3
    assert report.summary.max_concurrency_seen == 3
    # 12 requests of ~80 ms, 3 at a time: about 4 rounds, not 1 (all at once) and not 12 (serial).
    assert 0.3 < report.summary.duration_s < 1.5
    sends = sorted(r.sent_ms for r in report.records)
    assert sends[3] >= sends[0] + 60, "the 4th request waits for a slot"


async def test_infinite_rate_without_a_cap_sends_everything_at_once(fake_openai):
    fake_openai.first_delay_s = fake_openai.token_delay_s = 0.03
    report = await benchmark(_config(fake_openai.url, num_prompts=10))

    assert fake_openai.max_in_flight == 10
    assert max(r.sent_ms for r in report.records) < 100
    assert report.summary.duration_s < 0.5


async def test_poisson_arrivals_spread_requests_at_the_rate(fake_openai):
    fake_openai.first_delay_s = fake_openai.token_delay_s = 0.0
    report = await benchmark(_config(fake_openai.url, num_prompts=15, request_rate=50.0, seed=3))

    released = sorted(r.released_ms for r in report.records)
    assert released[0] < 20
    # 14 gaps of mean 20 ms: the last release lands near 280 ms (loosely: gaps are random).
    assert 100 < released[-1] < 700
    assert fake_openai.max_in_flight < 15
    assert report.summary.request_throughput == pytest.approx(15 / report.summary.duration_s)


async def test_metrics_of_a_run_match_the_servers_pace(fake_openai):
    fake_openai.first_delay_s, fake_openai.token_delay_s = 0.05, 0.02
    report = await benchmark(_config(fake_openai.url, num_prompts=4, output_len=5, goodput={"ttft": 5000}))
    s = report.summary

    assert s.total_output_tokens == 20
    assert s.total_input_tokens == 4 * 16
    assert 50 <= s.ttft_ms.p50 < 50 + 150
    assert 15 <= s.itl_ms.p50 < 20 + 60 and s.itl_ms.count == 4 * 4
    assert 15 <= s.tpot_ms.mean < 20 + 60
    assert s.output_throughput == pytest.approx(20 / s.duration_s)
    assert s.total_token_throughput == pytest.approx((20 + 64) / s.duration_s)
    assert s.goodput == pytest.approx(s.request_throughput)


async def test_failures_are_counted_not_raised(fake_openai):
    fake_openai.first_delay_s = fake_openai.token_delay_s = 0.0
    fake_openai.fail_every = 3
    report = await benchmark(_config(fake_openai.url, num_prompts=9, max_concurrency=1))

    assert report.summary.completed == 6 and report.summary.failed == 3
    assert [e.model_dump() for e in report.summary.errors] == [{"message": "HTTP 500: replica exploded", "count": 3}]
    assert [r.success for r in report.records] == [True, True, False] * 3


async def test_multi_turn_sends_each_turn_after_the_previous_one_ended(fake_openai):
    fake_openai.first_delay_s = fake_openai.token_delay_s = 0.01
    config = _config(fake_openai.url, dataset="multi-turn", num_conversations=3, num_turns=3, max_concurrency=2)
    requests, _ = plan(config)
    report = await benchmark(config)

    assert report.summary.completed == 9
    by_index = {r.index: r for r in report.records}
    for request in requests:
        if request.after is not None:
            assert by_index[request.index].sent_ms >= by_index[request.after].ended_ms
    # Turn 3 of a chat carries turns 1 and 2, so it is sent with 5 messages.
    assert sorted(len(body["messages"]) for body in fake_openai.bodies) == [1] * 3 + [3] * 3 + [5] * 3


async def test_the_model_defaults_to_the_servers_first(fake_openai):
    fake_openai.first_delay_s = fake_openai.token_delay_s = 0.0
    report = await benchmark(_config(fake_openai.url, model=None, num_prompts=2))

    assert report.model == FAKE_MODEL and report.summary.completed == 2


async def test_an_unreachable_server_fails_every_request_without_raising(closed_port_url):
    report = await benchmark(_config(closed_port_url, num_prompts=3))

    assert report.summary.completed == 0 and report.summary.failed == 3
    assert report.summary.ttft_ms is None and report.summary.request_throughput == 0


def test_run_bench_prints_the_tables(fake_openai):
    fake_openai.first_delay_s = fake_openai.token_delay_s = 0.0
    out = io.StringIO()
    report = run_bench(_config(fake_openai.url, num_prompts=3, goodput={"ttft": 1000}), Console(file=out, width=140))

    text = out.getvalue()
    assert report.summary.completed == 3
    for expected in ("Successful requests", "Goodput", "Output token throughput", "TTFT", "TPOT", "ITL", "E2E latency"):
        assert expected in text


def test_run_bench_without_a_model_on_an_unreachable_server_says_so(closed_port_url):
    with pytest.raises(UpstreamError, match="could not list models"):
        run_bench(_config(closed_port_url, model=None))


async def test_trace_replay_releases_at_the_traces_times_with_speedup(fake_openai, tmp_path):
    fake_openai.first_delay_s = fake_openai.token_delay_s = 0.0
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(f'{{"timestamp": {ms}, "input_length": 1024, "output_length": 3, "hash_ids": [0, {i}]}}\n'
                             for i, ms in enumerate([0, 400, 800, 1200])))
    report = await benchmark(_config(fake_openai.url, dataset="trace", trace=trace, trace_speedup=4.0,
                                     trace_block_size=8))

    released = [r.released_ms for r in report.records]
    assert report.summary.completed == 4
    for expected, actual in zip([0, 100, 200, 300], released, strict=True):
        assert expected <= actual < expected + 60
    prompts = [" ".join(m["content"] for m in body["messages"]) for body in fake_openai.bodies]
    assert all(p.split()[:8] == prompts[0].split()[:8] for p in prompts), "block 0 is shared"
    assert len({tuple(p.split()[8:]) for p in prompts}) == 4, "the second blocks differ"
    assert all(len(p.split()) == 16 for p in prompts)


async def test_real_azure_trace_replays_its_head(fake_openai):
    from .conftest import AZURE_CONV

    if not AZURE_CONV.is_file():
        pytest.skip(f"the Azure conversation trace is not at {AZURE_CONV}")
    fake_openai.first_delay_s = fake_openai.token_delay_s = 0.0
    # The first 6 requests span 6.31 s; 20x faster they take ~0.32 s. Lengths shrink to fit 256.
    report = await benchmark(_config(fake_openai.url, trace=AZURE_CONV, trace_max_requests=6, trace_speedup=20.0,
                                     dataset="trace", max_total_len=256, output_len=1))

    assert report.summary.completed == 6
    assert all(r.input_tokens + r.expected_output_tokens <= 256 for r in report.records)
    assert 315 <= max(r.released_ms for r in report.records) < 315 + 150
