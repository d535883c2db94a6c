"""Metering streamed chat and completions answers from their usage chunk, read as chunks pass."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from slipway.gateway.meter import StreamUsage
from tests.gateway.conftest import ServerThread, world

USAGE_EVENT = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":31,"completion_tokens":17,"total_tokens":48}}\n\n'
STREAM = (b'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant"}}],"usage":null}\n\n'
          b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi \\"usage\\": {"}}],"usage":null}\n\n'
          + USAGE_EVENT + b"data: [DONE]\n\n")


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_usage_is_found_wherever_the_stream_is_cut(cut):
    usage = StreamUsage()
    usage.feed(STREAM[:cut])
    usage.feed(STREAM[cut:])
    assert usage.units == (31, 17)


def test_byte_by_byte_and_without_a_usage_chunk():
    usage = StreamUsage()
    for i in range(len(STREAM)):
        usage.feed(STREAM[i:i + 1])
    assert usage.units == (31, 17)
    without = StreamUsage()
    without.feed(STREAM.replace(USAGE_EVENT, b""))
    assert without.units is None


def test_the_kept_tail_stays_bounded():
    usage = StreamUsage()
    usage.feed(b'data: {"usage": {"prompt_tokens": 1' + b" " * 10_000)
    for _ in range(100):
        usage.feed(b"x" * 1000)
    assert len(usage._tail) <= StreamUsage._MAX_TAIL


class SplitStreamReplica:
    """Streams STREAM in two pieces cut inside the usage object, with a pause between them."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        while (await receive()).get("more_body"):
            pass
        cut = STREAM.index(b'"completion_tokens"')
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": STREAM[:cut], "more_body": True})
        await asyncio.sleep(0.05)  # a separate network read on the gateway's side
        await send({"type": "http.response.body", "body": STREAM[cut:], "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@pytest.fixture
def split_replica():
    server = ServerThread(SplitStreamReplica()).start()
    yield server
    server.stop()


@pytest.mark.parametrize(("path", "route"), [("/v1/chat/completions", "chat.completions"),
                                             ("/v1/completions", "completions")])
def test_a_split_usage_chunk_is_metered_exactly_and_the_stream_passes_unchanged(split_replica, gateway, path, route):
    gw = gateway(world([split_replica.url]))
    with gw.client() as http:
        with http.stream("POST", path, json={"model": "echo", "stream": True}) as response:
            body = b"".join(response.iter_raw())
    assert body == STREAM
    (record,) = gw.sink.wait_for(1)
    assert (record.route, record.input_units, record.output_units) == (route, 31, 17)


def test_a_predict_stream_keeps_the_chunk_by_chunk_reading(split_replica, gateway):
    gw = gateway(world([split_replica.url]))
    with gw.client() as http:
        with http.stream("POST", "/models/echo/predict", content=orjson.dumps({})) as response:
            assert b"".join(response.iter_raw()) == STREAM
    (record,) = gw.sink.wait_for(1)
    # Only the chat and completions routes are scanned across chunks; a cut usage falls back.
    assert (record.route, record.input_units, record.output_units) == ("predict", 1, 1)
