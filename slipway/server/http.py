"""The few ASGI pieces the replica server needs: read a bounded body, send JSON, send a stream.

Streams are Server-Sent Events (`text/event-stream`), one event per chunk the runtime yields:

    dict / list / number  ->  data: <compact JSON>\\n\\n
    str                   ->  data: <text>\\n\\n          (one `data:` line per line of text)
    bytes                 ->  sent as they are           (the model frames its own events)

A stream that ends normally ends with `data: [DONE]\\n\\n`, as OpenAI streams do, so a client can
tell a finished stream from a cut one. If the model raises after the first chunk, the stream
ends with `event: error` and `data: {"error": {...}}` (OpenAI error shape) and no [DONE].
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson

from slipway.errors import SlipwayError
from slipway.spec.openai import error_body

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]
SSE_DONE = b"data: [DONE]\n\n"


class BodyTooLargeError(SlipwayError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "body_too_large"


class InvalidJSONError(SlipwayError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_json"


def dumps(value: Any) -> bytes:
    """Compact JSON; numpy arrays and pydantic models included."""
    return orjson.dumps(value, default=_fallback, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def _fallback(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable; return dicts, lists, strings and numbers")


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; `BodyTooLargeError` past `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"request body is over {limit} bytes; send less per request")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """The parsed body; `InvalidJSONError` (400) saying where it broke."""
    if not body.strip():
        raise InvalidJSONError("request body is empty; send a JSON body, e.g. {}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSONError(f"request body is not valid JSON ({exc}); send a JSON document") from None


def error_payload(exc: SlipwayError) -> dict[str, Any]:
    return error_body(exc.message, type=exc.error_type, code=exc.code, param=getattr(exc, "param", None))


async def send_json(send: Send, status: int, content: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = content if isinstance(content, bytes) else dumps(content)
    await send({"type": "http.response.start", "status": status,
                "headers": [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def send_bytes(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def sse_event(chunk: Any) -> bytes:
    """One chunk of a runtime's stream as SSE bytes (see the module docstring)."""
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, str):
        return b"".join(b"data: " + line.encode() + b"\n" for line in chunk.split("\n")) + b"\n"
    return b"data: " + dumps(chunk) + b"\n\n"


def sse_error(exc: BaseException) -> bytes:
    if isinstance(exc, SlipwayError):
        payload = error_payload(exc)
    else:
        payload = error_body(f"{type(exc).__name__}: {exc}", type="server_error", code="model_error")
    return b"event: error\ndata: " + dumps(payload) + b"\n\n"


async def send_stream(send: Send, receive: Receive, first: Any, rest: AsyncIterator[Any],
                      headers: list[tuple[bytes, bytes]] | None = None) -> BaseException | None:
    """Stream `first` then the rest of `rest` as SSE; returns the error the stream ended with, if any.

    Stops early (and returns None) when the client disconnects; the caller closes `rest`, which
    stops the model's generator.
    """
    disconnected = asyncio.Event()

    async def watch_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        disconnected.set()

    watcher = asyncio.get_running_loop().create_task(watch_disconnect())
    try:
        await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *(headers or [])]})
        await send({"type": "http.response.body", "body": sse_event(first), "more_body": True})
        failure: BaseException | None = None
        while not disconnected.is_set():
            try:
                chunk = await rest.__anext__()
            except StopAsyncIteration:
                break
            except Exception as exc:  # noqa: BLE001 - the model failed mid-stream; tell the client in-band
                failure = exc
                break
            await send({"type": "http.response.body", "body": sse_event(chunk), "more_body": True})
        await send({"type": "http.response.body", "body": sse_error(failure) if failure else SSE_DONE})
        return failure
    finally:
        watcher.cancel()
