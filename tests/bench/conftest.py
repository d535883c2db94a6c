"""A small fake OpenAI streaming server on 127.0.0.1 (uvicorn in a thread), and the trace paths.

The server streams `max_tokens` chunks of one word each, the first after `first_delay_s`, the
rest `token_delay_s` apart, then a usage chunk (when asked for) and `[DONE]`. Tests set its
behaviour through `FakeOpenAI` attributes and read back what it saw.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "traces"
AZURE_CONV = TRACES / "azure-llm-2023-conv.csv"
MOONCAKE = TRACES / "mooncake-conversation.jsonl"

FAKE_MODEL = "fake-model"


@dataclass
class FakeOpenAI:
    """What the fake server does, and what it saw."""

    url: str = ""
    first_delay_s: float = 0.03
    token_delay_s: float = 0.03
    send_usage: bool = True
    fail_every: int = 0
    """Answer every n-th request with HTTP 500 in the OpenAI error shape (0: never)."""
    error_after_tokens: int | None = None
    """Send an error event in the stream after this many tokens."""
    require_key: str | None = None
    bodies: list[dict] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    requests_seen: int = 0

    def reset(self) -> None:
        # Streams of an earlier test may still be ending, so in_flight carries over as it is.
        fresh = FakeOpenAI(url=self.url, in_flight=self.in_flight, max_in_flight=self.in_flight)
        for name in vars(fresh):
            setattr(self, name, getattr(fresh, name))


def _error(status: int, message: str, type_: str = "server_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": None, "code": None}}, status_code=status)


def make_app(fake: FakeOpenAI) -> Starlette:
    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": FAKE_MODEL, "object": "model"}]})

    async def completions(request: Request):
        body = await request.json()
        fake.bodies.append(body)
        fake.requests_seen += 1
        if fake.require_key and request.headers.get("authorization") != f"Bearer {fake.require_key}":
            return _error(401, "invalid API key", "authentication_error")
        if fake.fail_every and fake.requests_seen % fake.fail_every == 0:
            return _error(500, "replica exploded")
        if body.get("model") != FAKE_MODEL:
            return _error(404, f"model {body.get('model')!r} not found", "invalid_request_error")
        chat = request.url.path.endswith("/chat/completions")
        prompt = " ".join(m["content"] for m in body["messages"]) if chat else body["prompt"]
        num_tokens = int(body["max_tokens"])
        usage_wanted = bool((body.get("stream_options") or {}).get("include_usage")) and fake.send_usage

        def chunk(text: str | None = None, usage: dict | None = None) -> bytes:
            choices = [] if text is None else [
                {"index": 0, "delta": {"content": text}, "finish_reason": None} if chat
                else {"index": 0, "text": text, "finish_reason": None}]
            payload = {"id": "x", "object": "chunk", "model": FAKE_MODEL, "choices": choices}
            if usage is not None:
                payload["usage"] = usage
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        async def stream():
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
            try:
                if chat:  # like vLLM, a first chunk with the role and no text
                    yield b'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}\n\n'
                for i in range(num_tokens):
                    await asyncio.sleep(fake.first_delay_s if i == 0 else fake.token_delay_s)
                    if fake.error_after_tokens is not None and i == fake.error_after_tokens:
                        yield b'data: {"error": {"message": "engine died", "type": "server_error"}}\n\n'
                        return
                    yield chunk(f" w{i}")
                if usage_wanted:
                    prompt_tokens = len(prompt.split())
                    yield chunk(usage={"prompt_tokens": prompt_tokens, "completion_tokens": num_tokens,
                                       "total_tokens": prompt_tokens + num_tokens})
                yield b"data: [DONE]\n\n"
            finally:
                fake.in_flight -= 1

        return StreamingResponse(stream(), media_type="text/event-stream")

    return Starlette(routes=[
        Route("/v1/models", models),
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
    ])


@pytest.fixture(scope="module")
def _fake_server():
    fake = FakeOpenAI()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(make_app(fake), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the fake OpenAI server did not start in 10s"
        time.sleep(0.01)
    fake.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    yield fake
    server.should_exit = True
    thread.join(5)
    sock.close()


@pytest.fixture
def fake_openai(_fake_server: FakeOpenAI) -> FakeOpenAI:
    _fake_server.reset()
    return _fake_server


@pytest.fixture
def closed_port_url() -> str:
    """A URL nothing listens on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"
