"""TraceCapture's journal (replayed once after a crash), tags, stream assembly and redactors, without a gateway."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import orjson
import pytest

from slipway.errors import SpecError
from slipway.gateway import GatewayConfig, StoreTraceSink
from slipway.gateway.capture import (
    MAX_TAG_CHARS, MAX_TAGS, TraceCapture, TraceDraft, assemble_stream, build_trace, trace_tags,
)
from slipway.gateway.redact import load_redactor, mask_pii, mask_text
from slipway.store import Store, TraceRecord


def redact_secret(value):
    """A "module:function" redactor for the tests: drops a `secret` key wherever it is."""
    if isinstance(value, dict):
        return {k: redact_secret(v) for k, v in value.items() if k != "secret"}
    return value


def explode(value):
    raise ValueError("redactor bug")


def fields(request_id: str, **extra) -> dict:
    return {"request_id": request_id, "workspace_id": "ws-a", "model_name": "echo", "environment": "production",
            "deployment_id": "d-echo", "status_code": 200, "latency_ms": 1.5, "created_at": 1000.0,
            "route": "chat.completions", "units": (3, 4), **extra}


def draft(request: dict, response: dict, *, tags: bytes | None = None) -> TraceDraft:
    result = TraceDraft.start(orjson.dumps(request), tags, 1024 * 1024)
    result.set_body(orjson.dumps(response))
    return result


@pytest.fixture
def store(tmp_path: Path):
    opened = Store.open(None, tmp_path / "home")
    yield opened
    opened.close()


class FlakySink:
    """Writes to the store, then fails the first `failures` times: the journal must be replayed."""

    def __init__(self, store: Store, failures: int) -> None:
        self.inner = StoreTraceSink(store)
        self.failures = failures
        self.calls = 0
        self.lock = threading.Lock()

    def write(self, records: list[TraceRecord]) -> None:
        with self.lock:
            self.calls += 1
            self.inner.write(records)
            if self.failures:
                self.failures -= 1
                raise ConnectionError("database went away after the insert")


def run_capture(capture: TraceCapture, items: list[tuple[dict, TraceDraft]], wait) -> None:
    async def main() -> None:
        await capture.start()
        for item in items:
            capture.submit(*item)
        deadline = time.monotonic() + 5
        while not wait() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await capture.stop()

    asyncio.run(main())


def test_a_segment_left_by_a_crash_is_replayed_and_each_trace_stored_once(tmp_path, store):
    journal = tmp_path / "traces"
    journal.mkdir()
    lines = [build_trace(fields(f"req-{i}"), draft({"messages": [{"role": "user", "content": str(i)}]},
                                                     {"choices": []}), 1 << 20, None) for i in range(3)]
    segment = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    # What a crashed gateway leaves: a whole segment, and a copy of it whose write to the store
    # happened but whose delete did not, ending in a line cut short mid-write.
    (journal / "00000000000000000001-1-0.jsonl").write_bytes(segment)
    (journal / "00000000000000000002-1-0.jsonl").write_bytes(segment + b'{"id": "req-cut", "work')

    sink = FlakySink(store, failures=1)  # and the first write "fails" after inserting
    config = GatewayConfig(capture_journal_dir=journal, capture_flush_interval=0.05)
    capture = TraceCapture(sink, config)
    run_capture(capture, [], wait=lambda: sink.calls >= 3)

    assert sorted(r.id for r in store.traces.list("ws-a")) == ["req-0", "req-1", "req-2"]
    assert list(journal.glob("*.jsonl")) == []  # every segment written and deleted
    trace = store.traces.get("ws-a", "req-1")
    assert trace.request == {"messages": [{"role": "user", "content": "1"}]}
    assert (trace.prompt_tokens, trace.completion_tokens, trace.latency_ms) == (3, 4, 1.5)


def test_submitted_traces_go_through_the_journal_to_the_sink(tmp_path, store):
    sink = StoreTraceSink(store)
    capture = TraceCapture(sink, GatewayConfig(capture_journal_dir=tmp_path / "traces", capture_flush_interval=0.05))
    items = [(fields(f"req-{i}"), draft({"i": i}, {"ok": True})) for i in range(20)]
    run_capture(capture, items, wait=lambda: capture.written >= 20)
    assert store.traces.count("ws-a") == 20
    assert capture.dropped == 0


def test_traces_past_the_pending_bound_are_dropped_not_queued(tmp_path, store):
    capture = TraceCapture(StoreTraceSink(store), GatewayConfig(max_pending_trace_bytes=1))
    run_capture(capture, [(fields("req-1"), draft({"i": 1}, {}))], wait=lambda: True)
    assert capture.dropped == 1
    assert store.traces.count("ws-a") == 0


def test_tags_come_from_metadata_and_header_bounded():
    assert trace_tags({"team": "search", "n": 3}, b"a, b,k=v,,a") == ("team=search", "a", "b", "k=v")
    many = trace_tags({f"k{i}": "v" * 100 for i in range(20)}, b",".join(b"h%d" % i for i in range(20)))
    assert len(many) == MAX_TAGS
    assert all(len(tag) == MAX_TAG_CHARS for tag in many)
    assert trace_tags(["not", "a", "dict"], None) == ()


def test_completions_streams_are_assembled_per_choice():
    events = [
        {"id": "x", "choices": [{"index": 0, "text": "ab"}, {"index": 1, "text": "1"}]},
        {"id": "x", "choices": [{"index": 0, "text": "c", "finish_reason": "length"}, {"index": 1, "text": "2"}]},
    ]
    raw = b"".join(b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events) + b"data: [DONE]\r\n\r\n"
    result = assemble_stream(raw, "completions")
    assert result["choices"] == [{"index": 0, "text": "abc", "finish_reason": "length"},
                                 {"index": 1, "text": "12", "finish_reason": None}]
    assert assemble_stream(b'data: {"word": "hi"}\n\ndata: plain\n\n', "predict") == {
        "events": [{"word": "hi"}, "plain"], "stream": True}


def test_mask_pii_masks_emails_and_long_digit_runs_only():
    assert mask_text("write to a.b+c@mail.example.org or call 555-123-4567") == "write to [email] or call [number]"
    assert mask_text("order 12345 of 2024") == "order 12345 of 2024"  # short numbers stay
    assert mask_pii({"a": ["x@y.io", 1234567], "b@c.de": None}) == {"a": ["[email]", 1234567], "b@c.de": None}


def test_redactors_load_by_name_or_import_path():
    assert load_redactor(None) is None
    assert load_redactor("mask_pii") is mask_pii
    loaded = load_redactor("tests.gateway.test_capture_journal:redact_secret")
    assert loaded({"secret": 1, "kept": {"secret": 2}}) == {"kept": {}}
    for bad, says in [("nope", "neither a built-in"), ("no_such_module_xyz:f", "cannot be imported"),
                      ("tests.gateway.test_capture_journal:missing", "has no function")]:
        with pytest.raises(SpecError, match=says):
            load_redactor(bad)
    with pytest.raises(SpecError):
        TraceCapture(None, GatewayConfig(trace_redactor="nope"))


def test_a_custom_redactor_applies_and_a_failing_one_drops_the_trace():
    item = draft({"secret": "s3", "messages": []}, {"secret": "s4", "choices": []})
    line = build_trace(fields("req-1"), item, 1 << 20, redact_secret)
    assert line["request"] == {"messages": []} and line["response"] == {"choices": []}
    assert build_trace(fields("req-2"), item, 1 << 20, explode) is None
