"""Datasets on disk: canonical rows, a content hash, a deterministic split, atomic files, rows from traces.

A dataset folder ($SLIPWAY_HOME/datasets/<id>/, chosen by the caller) holds:

    train.jsonl         the training rows, one canonical JSON object per line
    validation.jsonl    the held-out rows
    manifest.json       counts, the split settings and the content hash of each file

The split is decided per row, by a seeded sha256 of the row's canonical JSON, not by position:
the same row lands on the same side whatever the file order, adding rows never moves the existing
ones, and duplicate rows land together so no example leaks from train into validation. The price
is that the validation share is only approximately `validation_fraction` on small datasets.

The content hash is sha256 over the canonical rows in order: key order, whitespace and escapes do
not change it, row order does (the order a job sees its rows in is part of what it trains).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slipway.errors import SpecError

HASH_BUCKETS = 2**64


def canonical_json(row: Any) -> str:
    """One row as canonical JSON: sorted keys, no spaces, UTF-8 characters kept as they are."""
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(rows: Iterable[Any]) -> str:
    """sha256 (hex) of the canonical rows, each followed by a newline."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(canonical_json(row).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def split_position(row: Any, seed: int) -> float:
    """Where a row falls in [0, 1): a stable function of the seed and the row's content."""
    digest = hashlib.sha256(f"{seed}\n{canonical_json(row)}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / HASH_BUCKETS


@dataclass(frozen=True)
class Split:
    """Train and validation rows, each in the order the rows came in."""

    train: list[Any]
    validation: list[Any]


def split_rows(rows: Sequence[Any], validation_fraction: float = 0.1, seed: int = 0) -> Split:
    """Split rows by their seeded hash; with two or more distinct rows and 0 < fraction < 1, both sides get one.

    A row goes to validation when its position is below `validation_fraction`. When that leaves a
    side empty, the distinct row nearest the boundary moves over, a choice that still depends only on
    the rows' content.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise SpecError(f"validation_fraction must be in [0, 1), got {validation_fraction}; "
                        "use e.g. 0.1 to hold out a tenth of the rows")
    positions = [split_position(row, seed) for row in rows]
    threshold = validation_fraction
    distinct = sorted(set(positions))
    if 0.0 < validation_fraction and len(distinct) >= 2:
        if all(p >= threshold for p in distinct):
            threshold = (distinct[0] + distinct[1]) / 2
        elif all(p < threshold for p in distinct):
            threshold = (distinct[-2] + distinct[-1]) / 2
    train = [row for row, p in zip(rows, positions) if p >= threshold]
    validation = [row for row, p in zip(rows, positions) if p < threshold]
    return Split(train=train, validation=validation)


@dataclass(frozen=True)
class SplitFiles:
    """Where a split was written and what it holds."""

    train_path: Path
    validation_path: Path
    manifest_path: Path
    num_train: int
    num_validation: int
    train_hash: str
    validation_hash: str


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old content or the new, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonl(rows: Iterable[Any]) -> bytes:
    return "".join(canonical_json(row) + "\n" for row in rows).encode("utf-8")


def write_split(folder: str | Path, split: Split, *, validation_fraction: float | None = None,
                seed: int | None = None) -> SplitFiles:
    """Write train.jsonl, validation.jsonl and then manifest.json, each atomically, under `folder`.

    The manifest is written last, so a folder with a manifest always has both files it describes.
    """
    folder = Path(folder)
    files = SplitFiles(
        train_path=folder / "train.jsonl",
        validation_path=folder / "validation.jsonl",
        manifest_path=folder / "manifest.json",
        num_train=len(split.train),
        num_validation=len(split.validation),
        train_hash=content_hash(split.train),
        validation_hash=content_hash(split.validation),
    )
    write_atomic(files.train_path, _jsonl(split.train))
    write_atomic(files.validation_path, _jsonl(split.validation))
    manifest = {
        "train": {"file": files.train_path.name, "rows": files.num_train, "sha256": files.train_hash},
        "validation": {"file": files.validation_path.name, "rows": files.num_validation,
                       "sha256": files.validation_hash},
        "validation_fraction": validation_fraction,
        "seed": seed,
    }
    write_atomic(files.manifest_path, json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"))
    return files


def _response_text(trace: dict[str, Any]) -> str | None:
    """The answer a trace should teach: a corrected output first, else what the model said."""
    corrected = trace.get("corrected_output")
    if isinstance(corrected, str) and corrected.strip():
        return corrected
    output = trace.get("output")
    if isinstance(output, str):
        return output
    response = trace.get("response")
    if isinstance(response, dict):
        choices = response.get("choices") or []
        if choices and isinstance(choices[0], dict):
            message = choices[0].get("message") or {}
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                return content
    return None


def rows_from_traces(traces: Iterable[dict[str, Any]], *, min_feedback_score: float | None = None,
                     require_feedback: bool = False) -> list[dict[str, Any]]:
    """Training rows from captured request/response traces; pure, in the traces' order.

    A trace is a dict with `request` (an OpenAI chat request: `messages`, optional `tools`), the
    answer as `corrected_output` (preferred when non-empty), `output` (a string) or `response` (an
    OpenAI chat completion), and an optional numeric `feedback_score`. Traces without messages or an
    answer are skipped. With `min_feedback_score`, a trace is kept when its score is at least that,
    or when it has no score and `require_feedback` is False. A corrected output counts as feedback
    that passes: someone wrote the right answer.
    """
    rows = []
    for trace in traces:
        request = trace.get("request") or {}
        messages = request.get("messages") if isinstance(request, dict) else None
        answer = _response_text(trace)
        if not isinstance(messages, list) or not messages or answer is None:
            continue
        corrected = isinstance(trace.get("corrected_output"), str) and trace["corrected_output"].strip()
        score = trace.get("feedback_score")
        if not corrected:
            if score is None and require_feedback:
                continue
            if min_feedback_score is not None and score is not None and score < min_feedback_score:
                continue
        row: dict[str, Any] = {
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages
                         if isinstance(m, dict) and "role" in m and "content" in m]
                        + [{"role": "assistant", "content": answer}],
        }
        if isinstance(request.get("tools"), list):
            row["tools"] = request["tools"]
        rows.append(row)
    return rows
