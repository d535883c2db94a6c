"""Replicas that fail: timeouts before the first byte, answers that break off midway, circuit breakers."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import orjson
import pytest

from tests.gateway.conftest import ADMIN_A, ServerThread, world


def events(body: bytes) -> list[bytes]:
    return [event for event in body.split(b"\n\n") if event]


# -- first byte --------------------------------------------------------------------------------

def test_a_first_byte_timeout_is_retried_on_another_replica(replicas, gateway):
    slow, fast = replicas(2)
    slow.header_delay = 5.0
    gw = gateway(world([slow.url, fast.url]), first_byte_timeout=0.3)
    with gw.client() as http:
        for _ in range(4):
            started = time.monotonic()
            answer = http.post("/models/echo/predict", json={})
            assert answer.status_code == 200 and answer.json()["replica"] == fast.replica_id
            assert time.monotonic() - started < 1.5
    assert slow.requests >= 1, "the slow replica was tried (and timed out) first"


def test_a_first_byte_timeout_with_no_other_replica_is_504(replicas, gateway):
    (slow,) = replicas(1)
    slow.header_delay = 5.0
    gw = gateway(world([slow.url]), first_byte_timeout=0.3)
    with gw.client() as http:
        response = http.post("/models/echo/predict", json={})
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "upstream_timeout"
    assert "no response headers within 0.3s" in error["message"] and "first_byte_timeout" in error["message"]


# -- broken midway -------------------------------------------------------------------------------

CHUNK = (b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"echo",'
         b'"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}\n\n')


class DyingReplica:
    """Streams one chat chunk (split across two writes, then half of a second one), then dies."""

    def __init__(self, content_type: bytes = b"text/event-stream", content_length: int | None = None) -> None:
        self.content_type = content_type
        self.content_length = content_length
        self.calls = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        while (await receive()).get("more_body"):
            pass
        self.calls += 1
        headers = [(b"content-type", self.content_type)]
        if self.content_length is not None:
            headers.append((b"content-length", b"%d" % self.content_length))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": CHUNK[:30], "more_body": True})
        await asyncio.sleep(0.02)
        await send({"type": "http.response.body", "body": CHUNK[30:] + CHUNK[:40], "more_body": True})
        await asyncio.sleep(0.05)
        raise ConnectionResetError("killed")  # uvicorn drops the connection mid-body


@pytest.fixture
def dying():
    servers = []

    def start(content_type: bytes = b"text/event-stream", content_length: int | None = None) -> ServerThread:
        server = ServerThread(DyingReplica(content_type, content_length)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_a_stream_broken_midway_ends_with_an_error_event_and_no_done(dying, gateway):
    gw = gateway(world([dying().url]))
    with gw.client() as http:
        with http.stream("POST", "/v1/chat/completions", json={"model": "echo", "stream": True}) as response:
            assert response.status_code == 200
            body = b"".join(response.iter_raw())
    *answered, last = events(body)
    assert answered == [CHUNK.rstrip(b"\n")], "whole events only: the half event never went out"
    assert last.startswith(b"data: ")
    error = orjson.loads(last[len(b"data: "):])["error"]
    assert (error["type"], error["code"]) == ("server_error", "upstream_disconnected")
    assert "broke off midway" in error["message"]
    assert b"[DONE]" not in body
    (record,) = gw.sink.wait_for(1)
    assert (record.status_code, record.input_units, record.output_units) == (502, 1, 1)


def test_the_openai_client_sees_a_broken_stream_as_an_error(dying, gateway):
    gw = gateway(world([dying().url]))
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=ADMIN_A, max_retries=0, timeout=10)
    stream = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}], stream=True)
    received = []
    with pytest.raises(openai.APIError) as broken:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == ["Hel"]
    assert "broke off midway" in broken.value.message


def test_a_stream_past_request_timeout_ends_with_an_error_event(replicas, gateway):
    (replica,) = replicas(1)  # its stream waits for `release`, which never comes
    gw = gateway(world([replica.url]), request_timeout=0.5)
    with gw.client() as http:
        with http.stream("POST", "/v1/chat/completions", json={"model": "echo", "stream": True}) as response:
            body = b"".join(response.iter_raw())
    first, last = events(body)
    assert first == b'data: {"n": 1}'
    error = orjson.loads(last[len(b"data: "):])["error"]
    assert error["code"] == "upstream_disconnected" and "time limit" in error["message"]


def test_a_plain_body_broken_midway_aborts_the_connection(dying, gateway):
    gw = gateway(world([dying(b"application/octet-stream").url]))
    with gw.client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            with http.stream("POST", "/models/echo/predict", json={}) as response:
                assert response.status_code == 200
                b"".join(response.iter_raw())
    (record,) = gw.sink.wait_for(1)
    assert record.status_code == 502


def test_a_replica_killed_mid_stream_ends_it_with_the_error_event(replicas, gateway):
    (replica,) = replicas(1)
    replica.break_stream = True
    gw = gateway(world([replica.url]))
    with gw.client() as http:
        with http.stream("POST", "/v1/chat/completions", json={"model": "echo", "stream": True}) as response:
            body = b"".join(response.iter_raw())
    assert events(body)[0] == b'data: {"n": 1}'
    assert b'"code":"upstream_disconnected"' in events(body)[-1] and b"[DONE]" not in body


# -- circuit breaker -------------------------------------------------------------------------------

def test_the_breaker_opens_after_n_failures_and_closes_after_a_healthy_probe(replicas, gateway):
    bad, good = replicas(2)
    bad.status = 500
    gw = gateway(world([bad.url, good.url]), breaker_failures=3, unhealthy_cooldown=0.5)
    tracker = gw.app.tracker
    with gw.client() as http:
        statuses = [http.post("/models/echo/predict", json={}).status_code for _ in range(12)]
        assert statuses.count(500) == 3 and bad.requests == 3
        assert tracker.state("d-echo-r0", time.monotonic()) == "open"
        assert statuses[-4:] == [200] * 4

        bad.status = None  # it recovers; after the cooldown one probe finds out
        time.sleep(0.55)
        answered = [http.post("/models/echo/predict", json={}).json()["replica"] for _ in range(4)]
        assert answered.count(bad.replica_id) >= 1
        assert tracker.state("d-echo-r0", time.monotonic()) == "closed"
        answered = [http.post("/models/echo/predict", json={}).json()["replica"] for _ in range(10)]
        assert answered.count(bad.replica_id) == 5, "back in full rotation"


def test_a_failed_probe_keeps_the_replica_out_for_another_cooldown(replicas, gateway):
    bad, good = replicas(2)
    bad.status = 500
    gw = gateway(world([bad.url, good.url]), breaker_failures=2, unhealthy_cooldown=0.3)
    with gw.client() as http:
        for _ in range(6):
            http.post("/models/echo/predict", json={})
        assert bad.requests == 2
        time.sleep(0.35)
        for _ in range(6):
            http.post("/models/echo/predict", json={})
        assert bad.requests == 3, "one probe, which failed"
        assert gw.app.tracker.state("d-echo-r0", time.monotonic()) == "open"


def test_a_whole_body_broken_before_anything_was_sent_is_retried_on_another_replica(dying, replicas, gateway):
    """Headers came, then the replica died before the rest of a buffered body: the client has seen
    nothing, so another replica answers and the request is billed once, as answered."""
    dead = dying(b"application/json", content_length=4096)
    (healthy,) = replicas(1)
    gw = gateway(world([dead.url, healthy.url]), breaker_failures=100)
    with gw.client() as http:
        answers = [http.post("/models/echo/predict", json={"n": i}) for i in range(6)]
    assert [a.status_code for a in answers] == [200] * 6
    assert dead.app.calls >= 1  # the dying replica was tried and its answer never reached a client
    records = gw.sink.wait_for(6)
    assert sorted(r.status_code for r in records) == [200] * 6
