"""One streamed request against the fake server: timings, token counts, failures as records."""

from __future__ import annotations

import statistics
import time

import aiohttp
import pytest

from slipway.bench.client import Target, first_model, send_request
from slipway.bench.config import BenchConfig
from slipway.bench.datasets import BenchRequest
from slipway.errors import UpstreamError

from .conftest import FAKE_MODEL


def _request(output_tokens: int = 5, index: int = 0) -> BenchRequest:
    return BenchRequest(index=index, messages=[{"role": "user", "content": "one two three four"}],
                        input_tokens=99, output_tokens=output_tokens)


async def _send(config: BenchConfig, request: BenchRequest, **session_kwargs):
    async with aiohttp.ClientSession(**session_kwargs) as session:
        origin = time.perf_counter()
        return await send_request(session, Target.from_config(config, config.model or FAKE_MODEL), request,
                                  origin=origin, released_at=origin)


async def test_timings_and_token_counts(fake_openai):
    fake_openai.first_delay_s, fake_openai.token_delay_s = 0.08, 0.03
    record = await _send(BenchConfig(base_url=fake_openai.url, model=FAKE_MODEL), _request(output_tokens=6))

    assert record.success, record.error
    assert record.status == 200
    assert record.output_tokens == 6 and record.usage_reported
    assert record.input_tokens == 4, "prompt tokens come from the server's usage when it sends them"
    assert 80 <= record.ttft_ms < 80 + 150
    assert len(record.itl_ms) == 5
    assert 25 <= statistics.median(record.itl_ms) < 30 + 60
    assert record.e2el_ms >= record.ttft_ms + 5 * 30 * 0.9
    assert record.tpot_ms == pytest.approx((record.e2el_ms - record.ttft_ms) / 5)
    assert record.ended_ms >= record.sent_ms + record.e2el_ms * 0.99


async def test_request_body_asks_for_a_stream_with_usage_and_ignore_eos(fake_openai):
    config = BenchConfig(base_url=fake_openai.url, model=FAKE_MODEL, extra_body={"temperature": 0})
    fake_openai.first_delay_s = fake_openai.token_delay_s = 0.0
    await _send(config, _request(output_tokens=3))

    body = fake_openai.bodies[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 3 and body["ignore_eos"] is True and body["temperature"] == 0
    assert body["messages"] == [{"role": "user", "content": "one two three four"}]


async def test_completions_endpoint_sends_a_prompt(fake_openai):
    fake_openai.first_delay_s = fake_openai.token_delay_s = 0.0
    config = BenchConfig(base_url=fake_openai.url + "/v1", model=FAKE_MODEL, endpoint="completions", ignore_eos=False)
    record = await _send(config, _request(output_tokens=4))

    assert record.success and record.output_tokens == 4
    assert fake_openai.bodies[-1]["prompt"] == "one two three four"
    assert "ignore_eos" not in fake_openai.bodies[-1]


async def test_without_usage_output_tokens_are_counted_chunks(fake_openai):
    fake_openai.send_usage = False
    fake_openai.first_delay_s = fake_openai.token_delay_s = 0.0
    record = await _send(BenchConfig(base_url=fake_openai.url, model=FAKE_MODEL), _request(output_tokens=7))

    assert record.success and not record.usage_reported
    assert record.output_tokens == 7
    assert record.input_tokens == 99, "without usage the dataset's prompt length stands"


async def test_http_error_is_a_failed_record_with_the_servers_message(fake_openai):
    record = await _send(BenchConfig(base_url=fake_openai.url, model="no-such-model"), _request())

    assert not record.success
    assert record.status == 404
    assert record.error == "HTTP 404: model 'no-such-model' not found"
    assert record.ttft_ms is None and record.output_tokens == 0


async def test_api_key_is_sent_as_bearer(fake_openai):
    fake_openai.require_key = "sk-slw-test"
    fake_openai.first_delay_s = fake_openai.token_delay_s = 0.0
    good = await _send(BenchConfig(base_url=fake_openai.url, model=FAKE_MODEL, api_key="sk-slw-test"), _request())
    bad = await _send(BenchConfig(base_url=fake_openai.url, model=FAKE_MODEL, api_key="sk-slw-wrong"), _request())

    assert good.success
    assert not bad.success and bad.status == 401 and "invalid API key" in bad.error


async def test_error_event_in_the_stream_fails_the_request(fake_openai):
    fake_openai.error_after_tokens = 2
    fake_openai.first_delay_s = fake_openai.token_delay_s = 0.0
    record = await _send(BenchConfig(base_url=fake_openai.url, model=FAKE_MODEL), _request(output_tokens=5))

    assert not record.success
    assert record.error == "error in stream: engine died"


async def test_connection_refused_is_a_failed_record(closed_port_url):
    record = await _send(BenchConfig(base_url=closed_port_url, model=FAKE_MODEL), _request())

    assert not record.success and record.status is None
    assert "ClientConnectorError" in record.error


async def test_a_stalled_stream_times_out_as_a_failed_record(fake_openai):
    fake_openai.first_delay_s = 2.0
    started = time.perf_counter()
    record = await _send(BenchConfig(base_url=fake_openai.url, model=FAKE_MODEL), _request(),
                         timeout=aiohttp.ClientTimeout(sock_read=0.2))

    assert not record.success
    assert record.error.startswith("timed out after")
    assert time.perf_counter() - started < 1.5


async def test_first_model_is_read_from_v1_models(fake_openai, closed_port_url):
    async with aiohttp.ClientSession() as session:
        assert await first_model(session, BenchConfig(base_url=fake_openai.url)) == FAKE_MODEL
        with pytest.raises(UpstreamError, match="pass --model NAME"):
            await first_model(session, BenchConfig(base_url=closed_port_url))
