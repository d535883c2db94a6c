"""A job's folder as the control plane reads and writes it, beside the job process.

    <job_dir>/
      job.json, events.jsonl, checkpoints/step-N/, adapter/, result.json, error.json
                       the job process's (layout in `slipway.train.job`, names in `slipway.spec.fine_tuning`)
      process.json     the supervisor's record of the process it runs: pid, start time, restarts
      worker.log       the process's output

events.jsonl is read incrementally from a byte offset, whole lines only, so a line being written
waits for the next read. The supervisor appends its own events (validated, restarting, registered,
cancelled) only while no process of the job runs, continuing the process's `seq` numbering.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from slipway.store import CheckpointRecord, EventRecord
from slipway.store.repositories.fine_tuning import EVENT_LEVELS, EVENT_TYPES

PROCESS_FILE = "process.json"
WORKER_LOG = "worker.log"
CHECKPOINT_STATE_FILE = "state.json"
STEP_PREFIX = "step-"
LOG_TAIL_BYTES = 2000


def read_events(path: Path, offset: int, max_bytes: int) -> tuple[list[EventRecord], int]:
    """The complete event lines after byte `offset` (at most `max_bytes` read), and the offset after them."""
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            data = file.read(max_bytes)
    except FileNotFoundError:
        return [], offset
    complete = data[: data.rfind(b"\n") + 1]
    events = [e for e in (event_record(line) for line in complete.split(b"\n")) if e is not None]
    return events, offset + len(complete)


def append_event(path: Path, message: str, *, now: float, level: str = "info",
                 data: dict[str, Any] | None = None) -> None:
    """Append one event after the last complete line (a torn last line is cut off first)."""
    event = {"seq": _next_seq(path), "created_at": now, "level": level, "type": "message", "message": message,
             "data": data}
    line = (json.dumps(event, separators=(",", ":"), allow_nan=False, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def event_record(line: bytes) -> EventRecord | None:
    """One events.jsonl line as the store keeps it; None for a line that is not an event."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("seq"), int):
        return None
    level = event.get("level") if event.get("level") in EVENT_LEVELS else "info"
    kind = event.get("type") if event.get("type") in EVENT_TYPES else "message"
    data = event.get("data") if isinstance(event.get("data"), dict) else None
    return EventRecord(seq=event["seq"], level=level, type=kind, message=str(event.get("message", "")),
                       created_at=float(event.get("created_at") or 0), data=data)


def checkpoint_names(folder: Path) -> tuple[str, ...]:
    """The complete checkpoint folders (step-N with a state.json), sorted by name."""
    try:
        return tuple(sorted(e.name for e in folder.iterdir()
                            if e.name.startswith(STEP_PREFIX) and (e / CHECKPOINT_STATE_FILE).is_file()))
    except FileNotFoundError:
        return ()


def checkpoint_records(folder: Path, names: tuple[str, ...]) -> list[CheckpointRecord]:
    found = []
    for name in names:
        state = read_json(folder / name / CHECKPOINT_STATE_FILE)
        step = name[len(STEP_PREFIX):]
        if isinstance(state, dict) and step.isdigit():
            found.append(CheckpointRecord(step=int(step), metrics=dict(state.get("metrics") or {}),
                                          path=str(folder / name), created_at=float(state.get("created_at") or 0)))
    return found


def read_json(path: Path) -> Any:
    """The file's JSON, or None when it is missing or not JSON (e.g. half-written by a killed process)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def concatenate(sources: list[Path], destination: Path) -> None:
    """Write the files one after another into `destination` (missing ones are skipped), atomically."""
    tmp = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as out:
        for source in sources:
            if source.is_file():
                out.write(source.read_bytes())
    os.replace(tmp, destination)


def log_tail(job_dir: Path) -> str:
    """The last characters of the process's output, for an error message."""
    try:
        with open(job_dir / WORKER_LOG, "rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - LOG_TAIL_BYTES))
            return file.read().decode(errors="replace").strip()
    except FileNotFoundError:
        return "(no log)"


def _next_seq(path: Path) -> int:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with open(path, "r+b") as handle:
            handle.truncate(len(data))
    for line in reversed(data.split(b"\n")):
        event = event_record(line)
        if event is not None:
            return event.seq + 1
    return 0
