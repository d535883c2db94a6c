"""Incremental Server-Sent Events decoding: bytes as they arrive in, complete `data` payloads out.

Only what OpenAI-compatible streams use: `data:` fields (several in one event are joined by
newlines), events ended by a blank line, comments and other fields ignored, LF or CRLF line ends.
The buffer is bounded: one event larger than `max_event_bytes` is an error, not unbounded memory.
"""

from __future__ import annotations

from slipway.errors import UpstreamError

DEFAULT_MAX_EVENT_BYTES = 4 * 1024 * 1024


class SseDecoder:
    """Feed it chunks of the response body; it returns the data of each event completed by them."""

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._max_event_bytes = max_event_bytes
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """The data of every event that `chunk` completes, in order."""
        self._buffer += chunk
        events: list[bytes] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line, self._buffer = self._buffer[:end].rstrip(b"\r"), self._buffer[end + 1:]
            event = self._line(line)
            if event is not None:
                events.append(event)
        if len(self._buffer) + sum(map(len, self._data)) > self._max_event_bytes:
            raise UpstreamError(f"a server-sent event exceeded {self._max_event_bytes} bytes; "
                                "the server is not streaming OpenAI chunks")
        return events

    def close(self) -> list[bytes]:
        """The data of an event the stream ended without a blank line after."""
        events = self.feed(b"\n") if self._buffer else []
        if self._data:
            events.append(b"\n".join(self._data))
            self._data = []
        return events

    def _line(self, line: bytes) -> bytes | None:
        if not line:
            if not self._data:
                return None
            data, self._data = b"\n".join(self._data), []
            return data
        if line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        return None
