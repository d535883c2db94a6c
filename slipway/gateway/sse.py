"""Server-sent events as the gateway relays them: whole events only, and the error event that ends a broken stream.

    framer = SseFramer()
    await send(framer.feed(chunk))          # the complete events so far; a partial one waits for the rest
    await send(framer.flush())              # at the end of the upstream body: whatever is left
    await send(error_event(message))        # the upstream broke: an OpenAI-shaped error, then stop

Relaying whole events means a stream that breaks midway never leaves the client holding half an
event: it gets every complete event, then `error_event`, and no `data: [DONE]`, which is how an
OpenAI client tells a cut answer from a finished one (the official client raises APIError on it).
"""

from __future__ import annotations

import orjson

from slipway.spec.openai import error_body

# An event larger than this without an end passes through as it comes rather than being held.
_MAX_PENDING_BYTES = 1024 * 1024
UPSTREAM_DISCONNECTED = "upstream_disconnected"


class SseFramer:
    """Splits an SSE byte stream at event boundaries (a blank line), holding back a partial event."""

    __slots__ = ("_pending", "mid_event")

    def __init__(self) -> None:
        self._pending = b""
        self.mid_event = False
        """True when bytes of an unfinished event already went out (one longer than the bound)."""

    def feed(self, chunk: bytes) -> bytes:
        """The bytes that may go out now: up to the end of the last complete event."""
        data = self._pending + chunk if self._pending else chunk
        end = _last_boundary(data)
        if end == len(data):
            self._pending = b""
            self.mid_event = False
            return data
        if end == 0 and len(data) > _MAX_PENDING_BYTES:
            self._pending = b""
            self.mid_event = True
            return data
        self._pending = data[end:]
        if end:
            self.mid_event = False
        return data[:end]

    def flush(self) -> bytes:
        """What is left at the end of a complete body (a last event without its blank line)."""
        pending, self._pending = self._pending, b""
        return pending

    def discard(self) -> None:
        """Drop a partial event: the stream broke before it was complete."""
        self._pending = b""


def error_event(message: str, code: str = UPSTREAM_DISCONNECTED) -> bytes:
    """`data: {"error": {...}}` in the OpenAI streaming shape, as one complete event."""
    return b"data: " + orjson.dumps(error_body(message, type="server_error", code=code)) + b"\n\n"


def _last_boundary(data: bytes) -> int:
    """Index just past the last blank line (LF LF or CRLF CRLF) in `data`; 0 when there is none."""
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
