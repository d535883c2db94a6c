"""Usage metering: one record per request, journaled at once, written to the sink in batches.

    meter.record(fields)    event loop, before the response's last bytes: one journal line
    flusher (a task)        every `usage_flush_interval` s: seal the journal segment, then in a
                            worker thread parse the sealed segments, `sink.write` them in batches
                            and delete each one written; a failing sink is retried with backoff
    on start                leftover segments (from a crash) are replayed first
    poison                  after 5 failed writes of a segment its records go one by one; those
                            the sink still refuses are set aside in `<journal>/refused/`

The event loop never waits on the database: only the worker thread calls the sink.

Units: a JSON response's `usage` (prompt_tokens in, completion_tokens out) when it has one, or
a streamed chat/completions answer's last usage chunk (`StreamUsage`, read as the chunks pass);
otherwise 1 in, 1 out for a success and 0, 0 for an error. An answer that broke off midway is
billed for what was answered, once, with status 502: its usage chunk if one passed, else 1 in,
1 out when any of it reached the client (0, 0 when none did).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from pydantic import ValidationError

from slipway.gateway.base import UsageSink
from slipway.gateway.config import GatewayConfig
from slipway.gateway.journal import DiskJournal, MemoryJournal
from slipway.spec.usage import UsageRecord

log = logging.getLogger(__name__)

_USAGE_KEY = b'"usage"'
# Longest `usage` object looked at; real ones are under 300 bytes.
_MAX_USAGE_BYTES = 4096
_MAX_BACKOFF = 30.0
_STOP_FLUSH_TIMEOUT = 10.0
# Consecutive failed writes of one segment before its records are tried one by one.
_FAILURES_BEFORE_ONE_BY_ONE = 5


def units_from_body(body: bytes) -> tuple[int, int] | None:
    """(prompt_tokens, completion_tokens) from the last `"usage": {...}` in a JSON body, else None.

    Reads only the usage object, not the whole body: an embeddings response can be megabytes.
    """
    at = body.rfind(_USAGE_KEY)
    while at >= 0:
        units = _units_at(body, at + len(_USAGE_KEY))
        if units is not None:
            return units
        at = body.rfind(_USAGE_KEY, 0, at)
    return None


def _units_at(body: bytes, start: int) -> tuple[int, int] | None:
    position = start
    end = min(len(body), start + _MAX_USAGE_BYTES)
    while position < end and body[position] in b" \t\r\n:":
        position += 1
    if position >= end or body[position] != 0x7B:  # "usage": null, or not a JSON object
        return None
    depth = 0
    for index in range(position, end):
        byte = body[index]
        if byte == 0x7B:
            depth += 1
        elif byte == 0x7D:
            depth -= 1
            if depth == 0:
                try:
                    usage = orjson.loads(body[position:index + 1])
                except orjson.JSONDecodeError:
                    return None
                prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens") or 0
                if isinstance(prompt, int) and isinstance(completion, int):
                    return prompt, completion
                return None
    return None


class StreamUsage:
    """The usage of a streamed (SSE) answer, read from its chunks as they pass, never buffered.

    OpenAI streams carry `"usage": {...}` in their last chunk (`stream_options.include_usage`) and
    `"usage": null` in the others. A usage object may arrive split across two network chunks, so
    the tail of each chunk from its last `"usage"` on (bounded) is kept and read again with the next.
    """

    __slots__ = ("units", "_tail")

    _MAX_TAIL = len(_USAGE_KEY) + _MAX_USAGE_BYTES

    def __init__(self) -> None:
        self.units: tuple[int, int] | None = None
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk if self._tail else chunk
        at = data.rfind(_USAGE_KEY)
        if at < 0:
            # The key itself may be cut: keep just enough to find it when the next chunk comes.
            self._tail = data[-(len(_USAGE_KEY) - 1):]
            return
        units = units_from_body(data)
        if units is not None:
            self.units = units
        self._tail = data[at:] if len(data) - at <= self._MAX_TAIL else data[-(len(_USAGE_KEY) - 1):]


class UsageMeter:
    def __init__(self, sink: UsageSink, config: GatewayConfig) -> None:
        self.sink = sink
        self.config = config
        self.journal: DiskJournal | MemoryJournal = (
            DiskJournal(config.usage_journal_dir) if config.usage_journal_dir is not None
            else MemoryJournal(config.max_pending_usage_records))
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self.written = 0

    def record(self, fields: dict[str, Any]) -> None:
        """Journal one usage record (the fields of `UsageRecord`)."""
        self.journal.append(orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE))

    async def start(self) -> None:
        self.journal.open()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="slipway-usage")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="slipway-usage-flusher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._executor is not None:
            try:
                await asyncio.wait_for(self.flush(), _STOP_FLUSH_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("usage sink did not take the last records within %ss; they stay in the journal "
                            "and are written on the next start", _STOP_FLUSH_TIMEOUT)
            self.journal.close()
            self._executor.shutdown(wait=False)
            self._executor = None

    async def flush(self) -> bool:
        """Seal the current segment and write every sealed one; False if the sink failed."""
        assert self._executor is not None, "start() the meter first"
        self.journal.seal()
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._drain)

    async def _run(self) -> None:
        delay = self.config.usage_flush_interval
        while True:
            ok = await self.flush()  # the first pass replays what a crashed process left
            delay = self.config.usage_flush_interval if ok else min(delay * 2, _MAX_BACKOFF)
            await asyncio.sleep(delay)

    def _drain(self) -> bool:
        """Worker thread: hand every sealed segment to the sink; stop at the first failure."""
        for segment in self.journal.sealed():
            records = _parse(segment.lines())
            try:
                self._write(records)
            except Exception as exc:  # noqa: BLE001 - the sink's failure must not stop the flusher
                self._failures += 1
                log.warning("usage sink failed (%s: %s); the records stay journaled and are retried",
                            type(exc).__name__, exc)
                if self._failures < _FAILURES_BEFORE_ONE_BY_ONE or not self._write_one_by_one(records):
                    segment.abandon()
                    return False
            self._failures = 0
            segment.done()
            self.written += len(records)
        return True

    def _write(self, records: list[UsageRecord]) -> None:
        batch_size = self.config.usage_batch_size
        for start in range(0, len(records), batch_size):
            self.sink.write(records[start:start + batch_size])

    def _write_one_by_one(self, records: list[UsageRecord]) -> bool:
        """After repeated failures: write each record alone and set aside those the sink refuses.

        Returns False when the sink refuses every one: it is down, not choking on a bad record,
        and the segment is kept for later.
        """
        refused = []
        for record in records:
            try:
                self.sink.write([record])
            except Exception:  # noqa: BLE001 - this record, not the sink, is the problem
                refused.append(record)
        if records and len(refused) == len(records):
            return False
        if refused:
            self._set_aside(refused)
        return True

    def _set_aside(self, records: list[UsageRecord]) -> None:
        directory = self.config.usage_journal_dir
        if directory is None:
            log.error("usage sink refused %d records; dropped: %s", len(records), [r.request_id for r in records])
            return
        folder = directory / "refused"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{time.time_ns():020d}-{os.getpid()}.jsonl"
        path.write_bytes(b"".join(r.model_dump_json().encode() + b"\n" for r in records))
        log.error("usage sink refused %d records; set aside in %s for a look", len(records), path)


def _parse(lines: list[bytes]) -> list[UsageRecord]:
    records = []
    for line in lines:
        try:
            records.append(UsageRecord.model_validate_json(line))
        except ValidationError as exc:
            # A line cut short by a crash mid-write, or written by another version: skip, keep the rest.
            log.warning("skipping an unreadable usage journal line (%s): %.200r", type(exc).__name__, line)
    return records
