"""Reading production LLM traces into `TraceRow`s: arrival time, lengths, prefix blocks.

Two formats, told apart by suffix (or by the first character when the suffix says neither):

    Azure LLM inference 2023   .csv    TIMESTAMP,ContextTokens,GeneratedTokens
                                       2023-11-16 18:15:46.6805900,374,44
    Mooncake (FAST 2025)       .jsonl  {"timestamp": 0, "input_length": 6758, "output_length": 500,
                                        "hash_ids": [0, 1, 2, ...]}      timestamp in ms

Arrival times are seconds since the first request of the file. A Mooncake `hash_ids` entry
names one 512-token block of the prompt; equal ids mean equal prefix blocks. Only the first
`max_requests` rows are read, so a huge file costs no more than its head.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import orjson

from slipway.errors import NotFoundError, SpecError

MOONCAKE_BLOCK_TOKENS = 512
"""Prompt tokens named by one entry of a Mooncake trace's `hash_ids`."""

AZURE_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


@dataclass(frozen=True)
class TraceRow:
    """One request of a trace."""

    arrival_s: float
    """Seconds after the trace's first request."""
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...] = ()
    """Mooncake only: one id per 512-token prompt block, equal ids for equal blocks."""


def load_trace(path: Path, *, max_requests: int) -> list[TraceRow]:
    """The first `max_requests` rows of an Azure CSV or Mooncake JSONL trace, sorted by arrival."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"trace {path} not found; pass an Azure .csv or Mooncake .jsonl file "
                            "(the project's traces live in ../shared/data/traces/)")
    with path.open("rb") as file:
        first = file.read(1)
    if path.suffix == ".jsonl" or (path.suffix != ".csv" and first == b"{"):
        rows = _read_mooncake(path, max_requests)
    else:
        rows = _read_azure(path, max_requests)
    if not rows:
        raise SpecError(f"trace {path} has no requests; pass a file with at least one row after the header")
    rows.sort(key=lambda row: row.arrival_s)
    origin = rows[0].arrival_s
    if origin != 0.0:  # a file not in time order: arrival times count from its earliest request
        rows = [replace(row, arrival_s=row.arrival_s - origin) for row in rows]
    return rows


def _read_azure(path: Path, max_requests: int) -> list[TraceRow]:
    rows: list[TraceRow] = []
    start: datetime | None = None
    with path.open(encoding="utf-8") as file:
        header = tuple(cell.strip() for cell in file.readline().split(","))
        if header != AZURE_HEADER:
            raise SpecError(f"trace {path}: header {','.join(header)!r} is not the Azure trace's "
                            f"{','.join(AZURE_HEADER)!r}; pass an Azure LLM trace CSV or a Mooncake .jsonl")
        for line_number, line in enumerate(file, start=2):
            if len(rows) >= max_requests:
                break
            if not line.strip():
                continue
            try:
                stamp, context, generated = line.strip().split(",")
                when = datetime.fromisoformat(stamp)
                start = start or when
                rows.append(TraceRow((when - start).total_seconds(), int(context), int(generated)))
            except ValueError:
                raise SpecError(f"trace {path}:{line_number}: {line.strip()!r} is not "
                                "'YYYY-MM-DD HH:MM:SS.ffff,CONTEXT_TOKENS,GENERATED_TOKENS'") from None
    return rows


def _read_mooncake(path: Path, max_requests: int) -> list[TraceRow]:
    rows: list[TraceRow] = []
    start_ms: float | None = None
    with path.open("rb") as file:
        for line_number, line in enumerate(file, start=1):
            if len(rows) >= max_requests:
                break
            if not line.strip():
                continue
            try:
                entry = orjson.loads(line)
                timestamp_ms = float(entry["timestamp"])
                start_ms = timestamp_ms if start_ms is None else start_ms
                rows.append(TraceRow(
                    arrival_s=(timestamp_ms - start_ms) / 1000.0,
                    input_tokens=int(entry["input_length"]),
                    output_tokens=int(entry["output_length"]),
                    hash_ids=tuple(int(h) for h in entry.get("hash_ids", ())),
                ))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                raise SpecError(f"trace {path}:{line_number}: not a Mooncake row; each line must be a JSON object "
                                "with timestamp (ms), input_length, output_length and hash_ids") from None
    return rows
