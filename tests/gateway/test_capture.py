"""Trace capture through a real gateway, fake replicas on 127.0.0.1 and a real SQLite store."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest

from slipway.gateway import GatewayConfig, StaticSnapshotSource, StoreTraceSink, create_gateway_app
from slipway.gateway.capture import TRACE_ID_HEADER, TRUNCATED_KEY
from slipway.spec.snapshot import ModelEntry
from slipway.store import Store
from tests.gateway.conftest import ADMIN_A, CollectingSink, ServerThread, deployment, world

TRACE_HEADER = TRACE_ID_HEADER.decode()


class OpenAIStreamReplica:
    """A replica whose chat answers stream as OpenAI chunks: "Hello", ", world", then usage."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        chunks = [
            {"id": "c-1", "object": "chat.completion.chunk", "model": "echo",
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello"}, "finish_reason": None}]},
            {"id": "c-1", "object": "chat.completion.chunk", "model": "echo",
             "choices": [{"index": 0, "delta": {"content": ", world"}, "finish_reason": "stop"}]},
            {"id": "c-1", "object": "chat.completion.chunk", "model": "echo", "choices": [],
             "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}},
        ]
        for chunk in chunks:
            # Split each event in two network writes, as a real server may.
            event = b"data: " + orjson.dumps(chunk) + b"\n\n"
            await send({"type": "http.response.body", "body": event[:10], "more_body": True})
            await send({"type": "http.response.body", "body": event[10:], "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


@pytest.fixture
def store(tmp_path: Path):
    opened = Store.open(None, tmp_path / "home")
    yield opened
    opened.close()


@pytest.fixture
def capturing_gateway(tmp_path: Path, store):
    """start(snapshot, **config) -> the URL of a gateway whose traces go to `store`."""
    started: list[ServerThread] = []

    def start(snapshot, **config) -> str:
        config.setdefault("usage_journal_dir", tmp_path / f"usage-{len(started)}")
        config.setdefault("capture_journal_dir", tmp_path / f"traces-{len(started)}")
        config.setdefault("usage_flush_interval", 0.05)
        config.setdefault("capture_flush_interval", 0.05)
        app = create_gateway_app(StaticSnapshotSource(snapshot), CollectingSink(), GatewayConfig(**config),
                                 traces=StoreTraceSink(store))
        server = ServerThread(app).start()
        started.append(server)
        return server.url

    yield start
    for server in started:
        server.stop()


def captured(urls: list[str], *, deployment_capture: bool = True, environments: list[str] | None = None):
    entry = deployment("d-echo", "echo", urls)
    entry.capture = deployment_capture
    snapshot = world(entry)
    if environments:
        snapshot.models[0] = ModelEntry(workspace_id="ws-a", name="echo", capture_environments=environments,
                                        environments={"production": "d-echo", "development": "d-echo-dev"})
    return snapshot


def wait_for_traces(store: Store, count: int, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = store.traces.list("ws-a")
        if len(rows) >= count:
            return rows
        time.sleep(0.02)
    raise AssertionError(f"the store has {len(store.traces.list('ws-a'))} traces, expected {count}")


def client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_A}"}, timeout=10)


def test_a_captured_chat_call_lands_in_the_store_with_request_response_tags_and_tokens(replicas, capturing_gateway,
                                                                                       store):
    (replica,) = replicas(1)
    url = capturing_gateway(captured([replica.url]))
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}],
            "metadata": {"customer": "acme", "tier": "gold"}}
    with client(url) as http:
        response = http.post("/v1/chat/completions", json=body, headers={"X-Slipway-Tags": "beta, billing ,beta"})
    assert response.status_code == 200
    trace_id = response.headers[TRACE_HEADER]

    (trace,) = wait_for_traces(store, 1)
    assert trace.id == trace_id
    assert trace.request == body
    assert trace.response["choices"][0]["message"]["content"] == "hi"
    assert (trace.model, trace.environment, trace.deployment_id) == ("echo", "production", "d-echo")
    assert (trace.status_code, trace.prompt_tokens, trace.completion_tokens) == (200, 7, 3)
    assert trace.tags == ("customer=acme", "tier=gold", "beta", "billing")
    assert trace.latency_ms > 0


def test_a_streamed_answer_is_stored_as_the_assembled_text_with_its_usage(capturing_gateway, store):
    server = ServerThread(OpenAIStreamReplica()).start()
    try:
        url = capturing_gateway(captured([server.url]))
        with client(url) as http, http.stream("POST", "/v1/chat/completions", json={
                "model": "echo", "stream": True, "messages": [{"role": "user", "content": "greet"}]}) as response:
            streamed = b"".join(response.iter_bytes())
            trace_id = response.headers[TRACE_HEADER]
        assert streamed.endswith(b"data: [DONE]\n\n")  # the client got the stream untouched
        (trace,) = wait_for_traces(store, 1)
    finally:
        server.stop()
    assert trace.id == trace_id
    assert trace.response["stream"] is True
    assert trace.response["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello, world"},
                                          "finish_reason": "stop"}]
    assert trace.response["usage"]["completion_tokens"] == 2
    assert (trace.prompt_tokens, trace.completion_tokens) == (4, 2)


def test_a_deployment_that_does_not_capture_stores_nothing(replicas, capturing_gateway, store):
    (replica,) = replicas(1)
    url = capturing_gateway(captured([replica.url], deployment_capture=False), usage_flush_interval=0.02)
    with client(url) as http:
        response = http.post("/models/echo/predict", json={"text": "private"})
    assert response.status_code == 200
    assert TRACE_HEADER not in response.headers
    time.sleep(0.3)  # several flush intervals
    assert store.traces.list("ws-a") == []


def test_an_environment_that_captures_stores_its_traffic_only(replicas, capturing_gateway, store):
    (replica,) = replicas(1)
    snapshot = captured([replica.url], deployment_capture=False, environments=["production"])
    url = capturing_gateway(snapshot)
    with client(url) as http:
        kept = http.post("/models/echo/environments/production/predict", json={"text": "keep me"})
        direct = http.post("/deployments/d-echo/predict", json={"text": "not through an environment"})
    assert kept.status_code == direct.status_code == 200
    assert TRACE_HEADER in kept.headers and TRACE_HEADER not in direct.headers
    (trace,) = wait_for_traces(store, 1)
    assert trace.request == {"text": "keep me"}
    assert trace.response["echo"] == {"text": "keep me"}
    # /predict has no token usage of its own
    assert (trace.environment, trace.prompt_tokens, trace.completion_tokens) == ("production", None, None)


def test_the_gateways_own_errors_are_captured_with_their_message(replicas, capturing_gateway, store):
    (replica,) = replicas(1)
    replica.status = 500
    url = capturing_gateway(captured([replica.url]))
    with client(url) as http:
        response = http.post("/v1/embeddings", json={"model": "echo", "input": "x"})
    assert response.status_code == 500
    (trace,) = wait_for_traces(store, 1)
    assert trace.id == response.headers[TRACE_HEADER]
    assert (trace.status_code, trace.response["error"]["message"]) == (500, "broken")


def test_bodies_over_the_limit_are_cut_with_a_marker(replicas, capturing_gateway, store):
    (replica,) = replicas(1)
    url = capturing_gateway(captured([replica.url]), capture_max_bytes=2048)
    big = "x" * 5000
    with client(url) as http:
        assert http.post("/models/echo/predict", json={"text": big}).status_code == 200
    (trace,) = wait_for_traces(store, 1)
    assert trace.request[TRUNCATED_KEY] == {"bytes": len(orjson.dumps({"text": big})), "kept_bytes": 2048}
    assert trace.request["text"].startswith('{"text":"xxx') and len(trace.request["text"]) == 2048
    assert TRUNCATED_KEY in trace.response


def test_mask_pii_redacts_request_and_response_before_they_are_stored(replicas, capturing_gateway, store):
    (replica,) = replicas(1)
    url = capturing_gateway(captured([replica.url]), trace_redactor="mask_pii")
    with client(url) as http:
        answer = http.post("/models/echo/predict", json={"text": "mail ann@example.com, card 4111 1111 1111 1111"})
    assert "ann@example.com" in answer.text  # the client's answer is never redacted
    (trace,) = wait_for_traces(store, 1)
    assert trace.request == {"text": "mail [email], card [number]"}
    assert trace.response["echo"] == {"text": "mail [email], card [number]"}
