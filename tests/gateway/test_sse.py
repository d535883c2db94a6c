"""SseFramer: an SSE stream relayed in whole events, wherever the network cuts it; the error event."""

from __future__ import annotations

import orjson
import pytest

from slipway.gateway.sse import SseFramer, error_event

STREAM = b'data: {"n": 1}\n\ndata: {"n": 2}\n\n: a comment\r\n\r\ndata: [DONE]\n\n'


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_only_whole_events_go_out_and_nothing_is_lost(cut):
    framer = SseFramer()
    out = [framer.feed(STREAM[:cut]), framer.feed(STREAM[cut:]), framer.flush()]
    assert b"".join(out) == STREAM
    for piece in out[:2]:
        assert piece == b"" or piece.endswith((b"\n\n", b"\r\n\r\n")), piece


def test_a_partial_event_is_dropped_when_the_stream_breaks():
    framer = SseFramer()
    assert framer.feed(b'data: {"n": 1}\n\ndata: {"n"') == b'data: {"n": 1}\n\n'
    framer.discard()
    assert framer.flush() == b"" and not framer.mid_event


def test_an_event_past_the_bound_passes_through_and_is_marked_unfinished():
    framer = SseFramer()
    huge = b"data: " + b"x" * (1024 * 1024 + 1)
    assert framer.feed(huge) == huge and framer.mid_event
    assert framer.feed(b"y\n\ndata: 2") == b"y\n\n" and not framer.mid_event


def test_the_error_event_is_an_openai_error_in_one_event():
    event = error_event("it broke")
    assert event.startswith(b"data: ") and event.endswith(b"\n\n") and event.count(b"\n\n") == 1
    assert orjson.loads(event[6:]) == {"error": {"message": "it broke", "type": "server_error", "param": None,
                                                 "code": "upstream_disconnected"}}
