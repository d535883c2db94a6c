"""Incremental SSE decoding over arbitrary chunk boundaries."""

from __future__ import annotations

import pytest

from slipway.bench.sse import SseDecoder
from slipway.errors import UpstreamError

STREAM = b'data: {"a": 1}\n\n: a comment\n\ndata: {"b": 2}\r\n\r\nevent: x\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n'
EXPECTED = [b'{"a": 1}', b'{"b": 2}', b"line1\nline2", b"[DONE]"]


def test_whole_stream_at_once():
    assert SseDecoder().feed(STREAM) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16])
def test_any_chunking_gives_the_same_events(size):
    decoder = SseDecoder()
    events = []
    for start in range(0, len(STREAM), size):
        events += decoder.feed(STREAM[start:start + size])
    assert events + decoder.close() == EXPECTED


def test_an_event_without_a_trailing_blank_line_is_flushed_on_close():
    decoder = SseDecoder()
    assert decoder.feed(b"data: last") == []
    assert decoder.close() == [b"last"]


def test_an_oversized_event_is_an_error_not_unbounded_memory():
    decoder = SseDecoder(max_event_bytes=100)
    with pytest.raises(UpstreamError, match="exceeded 100 bytes"):
        decoder.feed(b"data: " + b"x" * 200)
