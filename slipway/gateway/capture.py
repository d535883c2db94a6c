"""Trace capture: requests and answers of capturing deployments and environments, stored for the learning loop.

    draft = TraceDraft.start(body, tag_header, max_bytes)   event loop, once the target captures
    draft.set_body(answer) / draft.add_chunk(chunk)           event loop, as the answer passes (bounded)
    capture.submit(fields, draft)                             event loop, with the usage record: a
                                                              queue put, nothing parsed or written
    worker thread                                             parse, tag, redact, serialize, append to
                                                              the trace journal; every
                                                              `capture_flush_interval` s seal it and
                                                              write sealed segments to the TraceSink
    on start                                                  leftover segments (a crash) are replayed

The event loop only keeps references to bytes it already holds (a request body over
`capture_max_bytes` is cut first) and puts one item on a bounded queue; when the worker falls
behind, traces are dropped and counted, never the request slowed. The journal is the usage
journal's (journal.py) in a folder of its own; replay is harmless because the trace id is the
usage record's request id and the store skips ids it has. Traces still in the queue when the
process dies are lost: capture is a sample for learning, not a ledger.

Stored per trace: the request (JSON), the response (JSON; for an SSE answer the text assembled
from its chunks, OpenAI-shaped for chat and completions), tags, token counts, status and latency.
Tags come from the request's OpenAI `metadata` (a dict of strings, as `key=value`) and the
`X-Slipway-Tags: a,b,k=v` header: at most MAX_TAGS, each cut to MAX_TAG_CHARS.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from slipway.gateway.base import TraceSink
from slipway.gateway.config import GatewayConfig
from slipway.gateway.journal import DiskJournal, MemoryJournal
from slipway.gateway.redact import Redactor, load_redactor
from slipway.store import TraceRecord

log = logging.getLogger(__name__)

TRACE_ID_HEADER = b"x-slipway-trace-id"
MAX_TAGS = 16
MAX_TAG_CHARS = 64
TRUNCATED_KEY = "slipway_truncated"
_MAX_BACKOFF = 30.0
_STOP_TIMEOUT = 10.0
_STOP = object()
# Routes whose SSE chunks are OpenAI completion chunks, assembled into one completion.
_OPENAI_STREAM_ROUTES = frozenset({"chat.completions", "completions"})


@dataclass(slots=True)
class TraceDraft:
    """What the event loop collects of one captured call: references to bytes, bounded."""

    request: bytes
    request_bytes: int
    """Size of the whole request body; more than len(request) when it was cut."""
    tag_header: bytes | None
    max_bytes: int
    response_parts: list[bytes] = field(default_factory=list)
    response_bytes: int = 0
    """Size of the whole answer; more than `kept_bytes` when it was cut."""
    kept_bytes: int = 0
    stream: bool = False

    @classmethod
    def start(cls, body: bytes, tag_header: bytes | None, max_bytes: int) -> TraceDraft:
        kept = body if len(body) <= max_bytes else body[:max_bytes]
        return cls(request=kept, request_bytes=len(body), tag_header=tag_header, max_bytes=max_bytes)

    @property
    def response_cut(self) -> bool:
        return self.response_bytes > self.kept_bytes

    def set_body(self, body: bytes) -> None:
        """A whole answer (read at once, or the gateway's own error)."""
        kept = body if len(body) <= self.max_bytes else body[:self.max_bytes]
        self.response_parts, self.response_bytes, self.kept_bytes = [kept], len(body), len(kept)
        self.stream = False

    def add_chunk(self, chunk: bytes) -> None:
        """One chunk of a streamed answer; past max_bytes only its size is counted."""
        self.response_bytes += len(chunk)
        room = self.max_bytes - self.kept_bytes
        if room <= 0:
            return
        if len(chunk) > room:
            chunk = chunk[:room]
        self.response_parts.append(chunk)
        self.kept_bytes += len(chunk)


class TraceCapture:
    """Traces through a journal to a TraceSink, all the work in one worker thread."""

    def __init__(self, sink: TraceSink, config: GatewayConfig) -> None:
        self.sink = sink
        self.config = config
        self.redactor: Redactor | None = load_redactor(config.trace_redactor)
        self.journal: DiskJournal | MemoryJournal = (
            DiskJournal(config.capture_journal_dir) if config.capture_journal_dir is not None
            else MemoryJournal(config.max_pending_traces))
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending_lock = threading.Lock()
        self._pending_bytes = 0
        self._thread: threading.Thread | None = None
        self._flush_now = threading.Event()
        self.dropped = 0
        self.written = 0

    # -- event loop -------------------------------------------------------------------------------

    def submit(self, fields: dict[str, Any], draft: TraceDraft) -> None:
        """Queue one trace (`fields`: the usage record's, plus units as parsed); drops it when full."""
        size = len(draft.request) + draft.kept_bytes
        with self._pending_lock:
            if self._pending_bytes + size > self.config.max_pending_trace_bytes or self._thread is None:
                self.dropped += 1
                dropped = self.dropped
                size = -1
            else:
                self._pending_bytes += size
        if size < 0:
            if dropped == 1 or dropped % 1000 == 0:
                log.warning("trace capture is behind (over %d bytes queued, or not running); dropped %d traces "
                            "so far", self.config.max_pending_trace_bytes, dropped)
            return
        self._queue.put((fields, draft, size))

    async def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="slipway-capture", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Journal what is queued, write it to the sink (bounded wait), close the journal."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.to_thread(thread.join, _STOP_TIMEOUT)
        if thread.is_alive():
            log.warning("the trace sink did not take the last traces within %ss; they stay in the journal and are "
                        "written on the next start", _STOP_TIMEOUT)

    def flush_soon(self) -> None:
        """Ask the worker to write what it has now rather than at the next interval."""
        self._flush_now.set()
        self._queue.put(None)

    # -- worker thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        self.journal.open()
        interval = self.config.capture_flush_interval
        delay = 0.0  # the first pass replays what a crashed process left
        next_flush = time.monotonic()
        stopping = False
        while not stopping:
            timeout = max(0.0, next_flush - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                stopping = True
                self._journal_queued()
            elif item is not None:
                self._journal(item)
                continue
            if stopping or self._flush_now.is_set() or time.monotonic() >= next_flush:
                self._flush_now.clear()
                ok = self._flush()
                delay = interval if ok else min(max(delay, interval) * 2, _MAX_BACKOFF)
                next_flush = time.monotonic() + delay
        self.journal.close()

    def _journal_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and item is not _STOP:
                self._journal(item)

    def _journal(self, item: tuple[dict[str, Any], TraceDraft, int]) -> None:
        fields, draft, size = item
        try:
            record = build_trace(fields, draft, self.config.capture_max_bytes, self.redactor)
            if record is not None:
                self.journal.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        except Exception:  # noqa: BLE001 - one bad trace must not stop capture
            log.exception("capturing trace %s failed; it is dropped", fields.get("request_id"))
        finally:
            with self._pending_lock:
                self._pending_bytes -= size

    def _flush(self) -> bool:
        """Seal the journal and hand every sealed segment to the sink; False at the first failure."""
        self.journal.seal()
        batch_size = self.config.capture_batch_size
        for segment in self.journal.sealed():
            records = _parse(segment.lines())
            try:
                for start in range(0, len(records), batch_size):
                    self.sink.write(records[start:start + batch_size])
            except Exception as exc:  # noqa: BLE001 - the sink's failure must not stop capture
                log.warning("trace sink failed (%s: %s); the traces stay journaled and are retried",
                            type(exc).__name__, exc)
                segment.abandon()
                return False
            segment.done()
            self.written += len(records)
        return True


# -- building a trace (worker thread; pure) ---------------------------------------------------------

def build_trace(fields: dict[str, Any], draft: TraceDraft, max_bytes: int,
                redactor: Redactor | None) -> dict[str, Any] | None:
    """The journal line of one trace (TraceRecord's fields); None when the redactor refused it."""
    request = _json_body(draft.request, draft.request_bytes, max_bytes)
    tags = trace_tags(request.get("metadata"), draft.tag_header)
    raw = b"".join(draft.response_parts)
    if draft.stream and raw.lstrip().startswith((b"data:", b"event:", b"id:", b":")):
        response = assemble_stream(raw, fields.get("route", ""), cut=draft.response_cut)
    else:
        response = _json_body(raw, draft.response_bytes, max_bytes)
    if redactor is not None:
        try:
            request, response = redactor(request), redactor(response)
        except Exception:  # noqa: BLE001 - an unredacted trace is never stored
            log.exception("trace_redactor failed on trace %s; the trace is dropped", fields.get("request_id"))
            return None
        if not isinstance(request, dict) or not isinstance(response, dict):
            log.error("trace_redactor must return a dict for a dict; trace %s is dropped", fields.get("request_id"))
            return None
    units = fields.get("units")
    return {
        "id": fields["request_id"], "workspace_id": fields["workspace_id"], "model": fields["model_name"],
        "environment": fields.get("environment"), "deployment_id": fields.get("deployment_id"),
        "request": request, "response": response, "status_code": fields["status_code"],
        "latency_ms": fields["latency_ms"], "created_at": fields["created_at"],
        "prompt_tokens": units[0] if units else None, "completion_tokens": units[1] if units else None,
        "tags": list(tags),
    }


def trace_tags(metadata: Any, header: bytes | None) -> tuple[str, ...]:
    """Tags from an OpenAI `metadata` dict (`key=value`) and an X-Slipway-Tags header; bounded, deduplicated."""
    tags: list[str] = []
    if isinstance(metadata, dict):
        tags += [f"{key}={value}" for key, value in metadata.items() if isinstance(value, str)]
    if header:
        tags += [part.strip() for part in header.decode("utf-8", "replace").split(",")]
    unique = dict.fromkeys(tag[:MAX_TAG_CHARS] for tag in tags if tag)
    return tuple(unique)[:MAX_TAGS]


def assemble_stream(raw: bytes, route: str, *, cut: bool = False) -> dict[str, Any]:
    """An SSE answer as one JSON object: OpenAI chunks merged into one completion, other events listed."""
    payloads: list[Any] = []
    for event in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = b"\n".join(line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data or data == b"[DONE]":
            continue
        try:
            payloads.append(orjson.loads(data))
        except orjson.JSONDecodeError:
            payloads.append(data.decode("utf-8", "replace"))  # the last event of a cut stream, or plain text
    result: dict[str, Any]
    if route in _OPENAI_STREAM_ROUTES:
        result = _merge_completion_chunks(payloads, chat=route == "chat.completions")
    else:
        result = {"events": payloads}
    result["stream"] = True
    if cut:
        result[TRUNCATED_KEY] = True
    return result


def _merge_completion_chunks(payloads: list[Any], *, chat: bool) -> dict[str, Any]:
    choices: dict[int, dict[str, Any]] = {}
    texts: dict[int, list[str]] = {}
    result: dict[str, Any] = {"object": "chat.completion" if chat else "text_completion"}
    for payload in payloads:
        if not isinstance(payload, dict):
            continue
        if "error" in payload:
            result["error"] = payload["error"]
            continue
        for key in ("id", "model", "created"):
            if key in payload and key not in result:
                result[key] = payload[key]
        if isinstance(payload.get("usage"), dict):
            result["usage"] = payload["usage"]
        for choice in payload.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0) if isinstance(choice.get("index", 0), int) else 0
            merged = choices.setdefault(index, {"index": index, "finish_reason": None})
            pieces = texts.setdefault(index, [])
            if chat:
                delta = choice.get("delta") or {}
                if isinstance(delta, dict):
                    if isinstance(delta.get("role"), str):
                        merged["role"] = delta["role"]
                    if isinstance(delta.get("content"), str):
                        pieces.append(delta["content"])
                    if delta.get("tool_calls"):
                        merged.setdefault("tool_call_deltas", []).extend(delta["tool_calls"])
            elif isinstance(choice.get("text"), str):
                pieces.append(choice["text"])
            if choice.get("finish_reason") is not None:
                merged["finish_reason"] = choice["finish_reason"]
    assembled = []
    for index in sorted(choices):
        merged, text = choices[index], "".join(texts[index])
        if chat:
            message: dict[str, Any] = {"role": merged.pop("role", "assistant"), "content": text}
            if "tool_call_deltas" in merged:
                message["tool_call_deltas"] = merged.pop("tool_call_deltas")
            assembled.append({"index": index, "message": message, "finish_reason": merged["finish_reason"]})
        else:
            assembled.append({"index": index, "text": text, "finish_reason": merged["finish_reason"]})
    result["choices"] = assembled
    return result


def _json_body(raw: bytes, size: int, max_bytes: int) -> dict[str, Any]:
    """A body as a JSON object: itself when it is one, else wrapped; a cut or non-JSON body as text."""
    if size > len(raw) or size > max_bytes:
        return {TRUNCATED_KEY: {"bytes": size, "kept_bytes": len(raw)}, "text": raw.decode("utf-8", "replace")}
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"text": raw.decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"body": value}


def _parse(lines: list[bytes]) -> list[TraceRecord]:
    records = []
    for line in lines:
        try:
            data = orjson.loads(line)
            data["tags"] = tuple(data.get("tags") or ())
            records.append(TraceRecord(**data))
        except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
            # A line cut short by a crash mid-write, or written by another version: skip, keep the rest.
            log.warning("skipping an unreadable trace journal line (%s): %.200r", type(exc).__name__, line)
    return records
