"""Dataset folders and their rows in the store: upload JSONL, build from traces, delete.

    DatasetCatalog(store, home)
      from_jsonl(workspace, bytes)     validate every line ─► split ─► folder ─► row
      from_traces(workspace, filter)   matching traces ─► chat rows (corrected outputs first) ─► ...
      delete(workspace, id)            row, then folder

A dataset lives in $SLIPWAY_HOME/datasets/<id>/ (train.jsonl, validation.jsonl, manifest.json;
see `slipway.train.datasets`). Everything is checked before anything is written, the folder is
written under a hidden name and renamed into place, and only then is the row inserted, so a bad
upload leaves nothing behind and a row always names a complete folder. The row's content hash is
`content_hash` of all rows in upload order; the manifest holds each file's own hash.

The control plane's dataset routes use this through `slipway.control.learning.DatasetFiles`.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from slipway.errors import SpecError
from slipway.store import DatasetRow, Store, TraceFilter
from slipway.train.dataset_format import MAX_LISTED_PROBLEMS, DatasetError, check_row, validate_text
from slipway.train.datasets import Split, content_hash, rows_from_traces, split_rows, write_split

log = logging.getLogger(__name__)

DATASETS_DIR = "datasets"
DEFAULT_MAX_TRACE_ROWS = 100_000


class DatasetCatalog:
    """Builds dataset folders under `home`/datasets and records them in the store."""

    def __init__(self, store: Store, home: Path, *, max_trace_rows: int = DEFAULT_MAX_TRACE_ROWS,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.root = Path(home) / DATASETS_DIR
        self.max_trace_rows = max_trace_rows
        self._clock = clock

    def from_jsonl(self, workspace_id: str, data: bytes, *, name: str, validation_fraction: float = 0.1,
                   seed: int = 0) -> tuple[DatasetRow, list[str]]:
        """A dataset from OpenAI chat fine-tuning JSONL; `DatasetError` lists every bad line by number."""
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SpecError(f"{name}: the file is not UTF-8 text (byte {exc.start} is not valid UTF-8); save it "
                            "as UTF-8 JSONL", code="invalid_dataset") from None
        report = validate_text(text)
        if not report.ok:
            raise DatasetError(name, report.errors)
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        if not rows:
            raise SpecError(f"{name} has no rows; put one chat example per line: "
                            '{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}',
                            code="invalid_dataset")
        warnings = [str(p) for p in report.warnings[:MAX_LISTED_PROBLEMS]]
        row = self._write(workspace_id, rows, name=name, source="upload", filters=None,
                          validation_fraction=validation_fraction, seed=seed)
        return row, warnings

    def from_traces(self, workspace_id: str, where: TraceFilter, *, name: str, validation_fraction: float = 0.1,
                    seed: int = 0) -> tuple[DatasetRow, list[str]]:
        """A dataset from the workspace's traces that match `where`, oldest first.

        Each trace teaches its corrected output when someone wrote one, else the model's answer.
        Traces with nothing to learn from (no messages, no answer, or a row the validator refuses)
        are skipped and counted in the warnings.
        """
        rows: list[dict[str, Any]] = []
        skipped: list[str] = []
        matched = 0
        for trace in self.store.traces.iterate(workspace_id, where):
            matched += 1
            built = rows_from_traces([trace.training_source()], min_feedback_score=where.min_feedback_score)
            problems = [reason for row in built for severity, reason in check_row(row)[0] if severity == "error"]
            if not built or problems:
                skipped.append(f"trace {trace.id}: " + ("; ".join(problems) if problems
                                                         else "no chat messages or no answer to learn from"))
                continue
            rows.append(built[0])
            if len(rows) >= self.max_trace_rows:
                skipped.append(f"stopped at {self.max_trace_rows} rows; narrow the filter (since, until, tags) "
                               "for the rest")
                break
        if not rows:
            why = (f"{matched} trace(s) match but none has chat messages and an answer to learn from"
                   if matched else "no trace matches the filter")
            raise SpecError(f"cannot build dataset {name!r}: {why}; loosen the filter "
                            f"({json.dumps(where.as_dict())}) or capture traces first (capture: true in "
                            "slipway.yaml)", code="no_matching_traces")
        warnings = skipped[:MAX_LISTED_PROBLEMS]
        if len(skipped) > MAX_LISTED_PROBLEMS:
            warnings.append(f"... and {len(skipped) - MAX_LISTED_PROBLEMS} more traces skipped")
        row = self._write(workspace_id, rows, name=name, source="traces", filters=where.as_dict(),
                          validation_fraction=validation_fraction, seed=seed)
        return row, warnings

    def delete(self, workspace_id: str, dataset_id: str) -> DatasetRow | None:
        """Remove the row and then the folder; None if the workspace has no such dataset."""
        row = self.store.datasets.delete(workspace_id, dataset_id)
        if row is not None:
            shutil.rmtree(row.path, ignore_errors=True)
        return row

    def _write(self, workspace_id: str, rows: list[dict[str, Any]], *, name: str, source: str,
               filters: dict[str, Any] | None, validation_fraction: float, seed: int) -> DatasetRow:
        split = split_rows(rows, validation_fraction, seed)
        if not split.train:
            # Too few distinct rows to hold any out: train on all of them.
            split = Split(train=list(rows), validation=[])
        dataset_id = self.store.datasets.new_id()
        final = self.root / dataset_id
        staging = self.root / f".tmp-{dataset_id}"
        try:
            write_split(staging, split, validation_fraction=validation_fraction, seed=seed)
            staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            return self.store.datasets.create(
                workspace_id, name=name, source=source, content_hash=content_hash(rows),  # type: ignore[arg-type]
                train_rows=len(split.train), validation_rows=len(split.validation), path=str(final),
                now=self._clock(), filters=filters, dataset_id=dataset_id)
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
