"""A small raw-ASGI stand-in for a replica, with knobs the gateway tests turn.

    POST /predict               {"replica": id, "echo": body, "request_id": x-request-id}; {"sleep": s} waits first
    POST /v1/embeddings         OpenAI shape, one 3-float vector per input, usage.prompt_tokens = inputs
    POST /v1/chat/completions   {"stream": true}: SSE, first chunk at once, the rest after `release` is set
    draining = True             every request gets 503 (as a draining replica answers)
    status = 500                every request gets this status, in the OpenAI error shape
    header_delay = 2.0          every answer starts only after this many seconds (or once `release` is set)
    break_stream = True         a stream dies after its first chunk (the connection drops, as when
                                the replica is killed)
"""

from __future__ import annotations

import asyncio
import threading
import time

import orjson


class FakeReplica:
    def __init__(self, replica_id: str) -> None:
        self.replica_id = replica_id
        self.draining = False
        self.status: int | None = None
        self.header_delay = 0.0
        self.break_stream = False
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.request_ids: list[str] = []
        self.last_headers: dict[bytes, bytes] = {}
        self.release = threading.Event()       # lets a held stream finish
        self.stream_finished = threading.Event()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        headers = dict(scope["headers"])
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests += 1
        self.request_ids.append(headers.get(b"x-request-id", b"").decode())
        self.last_headers = headers
        if self.header_delay:
            until = time.monotonic() + self.header_delay
            while time.monotonic() < until and not self.release.is_set():  # `release` ends it early
                await asyncio.sleep(0.01)
        if self.draining:
            await _json(send, 503, {"error": {"message": "draining", "type": "server_error", "code": "draining"}})
            return
        if self.status is not None:
            await _json(send, self.status, {"error": {"message": "broken", "type": "server_error", "code": None}})
            return
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            payload = orjson.loads(body) if body else {}
            path = scope["path"]
            if path == "/predict":
                if isinstance(payload, dict) and payload.get("sleep"):
                    await asyncio.sleep(payload["sleep"])
                await _json(send, 200, {"replica": self.replica_id, "echo": payload,
                                        "request_id": headers.get(b"x-request-id", b"").decode()})
            elif path == "/v1/embeddings":
                inputs = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
                await _json(send, 200, {
                    "object": "list", "model": payload["model"],
                    "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                             for i in range(len(inputs))],
                    "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}})
            elif path == "/v1/chat/completions" and payload.get("stream"):
                await self._stream(send)
            elif path == "/v1/chat/completions":
                await _json(send, 200, {"object": "chat.completion", "choices": [{"index": 0, "message": {
                    "role": "assistant", "content": "hi"}}],
                    "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})
            else:
                await _json(send, 404, {"error": {"message": f"no route {path}"}})
        finally:
            self.in_flight -= 1

    async def _stream(self, send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        await send({"type": "http.response.body", "body": b'data: {"n": 1}\n\n', "more_body": True})
        if self.break_stream:
            await asyncio.sleep(0.05)  # the first chunk leaves before the connection drops
            raise ConnectionResetError("the replica died mid-stream")
        while not self.release.is_set():
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b'data: {"n": 2}\n\n', "more_body": True})
        await send({"type": "http.response.body", "more_body": True, "body": b'data: {"n": 3, "usage": '
                    b'{"prompt_tokens": 5, "completion_tokens": 2}}\n\ndata: [DONE]\n\n'})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.stream_finished.set()


async def _json(send, status: int, content) -> None:
    body = orjson.dumps(content)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
