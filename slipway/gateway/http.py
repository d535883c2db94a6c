"""Raw ASGI plumbing for the gateway: request headers in one pass, bounded body reads, JSON answers.

No framework on the hot path: a request costs one scan of its headers and a few dict lookups.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any, Awaitable, Callable, MutableMapping

import orjson

from slipway.errors import SlipwayError
from slipway.gateway.errors import BodyTooLargeError, InvalidJSONError
from slipway.spec.openai import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_TYPE = b"application/json"
# A client's own request id is echoed when it is short and plain (it lands in logs and headers).
_SANE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,64}$")


class RequestHeaders:
    """The request headers the gateway reads, found in one pass over the ASGI header list."""

    __slots__ = ("authorization", "api_key", "request_id", "content_type", "content_length", "tags")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.authorization = self.api_key = self.request_id = self.content_type = self.content_length = None
        self.tags = None  # X-Slipway-Tags, read only when the request is captured
        for name, value in raw:
            if name == b"authorization":
                self.authorization = value
            elif name == b"content-type":
                self.content_type = value
            elif name == b"content-length":
                self.content_length = value
            elif name == b"x-request-id":
                self.request_id = value
            elif name == b"api-key":
                self.api_key = value
            elif name == b"x-slipway-tags":
                self.tags = value

    def secret(self) -> bytes | None:
        """The API key from `Authorization: Bearer …` or `Api-Key: …`."""
        if self.authorization is not None:
            scheme, _, token = self.authorization.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
        if self.api_key is not None and self.api_key.strip():
            return self.api_key.strip()
        return None

    def client_request_id(self) -> bytes | None:
        value = self.request_id
        return value if value is not None and _SANE_REQUEST_ID.match(value) else None


class _RequestIds:
    """Unique ids without a syscall per request: a random per-process prefix and a counter.

    The prefix is drawn again in a forked child, so two processes never share a sequence.
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = b"req-" + os.urandom(8).hex().encode()
        self._counter = itertools.count(1)

    def next(self) -> bytes:
        return b"%s%08x" % (self._prefix, next(self._counter))


new_request_id = _RequestIds().next


async def read_body(receive: Receive, headers: RequestHeaders, limit: int) -> bytes:
    """The whole request body; `BodyTooLargeError` by Content-Length at once, or while it streams in."""
    declared = headers.content_length
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            size = -1
        if size > limit:
            raise _too_large(limit)
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise _too_large(limit)
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _too_large(limit: int) -> BodyTooLargeError:
    return BodyTooLargeError(f"request body is larger than {limit} bytes; send less per request "
                             "(split the input into several requests)")


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise InvalidJSONError("request body is empty; send a JSON document, e.g. {}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSONError(f"request body is not valid JSON ({exc}); send a JSON document") from None


async def send_json(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", JSON_TYPE), (b"content-length", b"%d" % len(body)), *headers]})
    await send({"type": "http.response.body", "body": body})


def error_json(exc: SlipwayError) -> bytes:
    return orjson.dumps(error_body(exc.message, type=exc.error_type, code=exc.code))
