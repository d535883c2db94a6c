"""A fine-tuning job on disk: its spec, hyperparameters, folder layout, event log and errors.

Whoever starts a job writes `job.json` into a fresh folder and runs
`python -m slipway.train.worker --job-dir DIR`. Everything the job produces lands in the same
folder, so the folder alone says how far the job got and a restart picks up from there:

    DIR/
      job.json               JobSpec (paths in it may be relative to DIR)
      events.jsonl           progress: one JSON object per line, appended, `seq` counting from 0
      checkpoints/step-N/    adapter/ + training_state.pt + state.json, each folder renamed into place whole
      adapter/               the final PEFT adapter, with lineage.json
      result.json            written on success
      error.json             written on failure: OpenAI's job error {"code", "message", "param"}

Hyperparameters follow OpenAI's (`n_epochs`, `batch_size`, `learning_rate_multiplier`, each a
number or "auto") plus the LoRA settings; `resolve` turns "auto" into numbers once the number of
training rows is known; both, and the file names above, are defined in `slipway.spec.fine_tuning`
and re-exported here. Nothing here imports torch, so a bad spec fails in well under a second.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from slipway.errors import SlipwayError
# The spec, hyperparameters and file names live in slipway.spec.fine_tuning, where the control plane
# (which writes job.json) can import them; they are re-exported here for the job process.
from slipway.spec.fine_tuning import (
    ADAPTER_DIR,
    AUTO_BATCH_SIZE,
    AUTO_CHECKPOINT_MAX_STEPS,
    AUTO_EPOCHS,
    BASE_LEARNING_RATE,
    CHECKPOINTS_DIR,
    ERROR_FILE,
    EVENTS_FILE,
    LINEAGE_FILE,
    RESULT_FILE,
    SPEC_FILE,
    Auto,
    Hyperparameters,
    JobSpec,
)
from slipway.train.dataset_format import validate_file
from slipway.train.datasets import write_atomic

__all__ = [
    "ADAPTER_DIR", "AUTO_BATCH_SIZE", "AUTO_CHECKPOINT_MAX_STEPS", "AUTO_EPOCHS", "BASE_LEARNING_RATE",
    "CHECKPOINTS_DIR", "ERROR_FILE", "EVENTS_FILE", "LINEAGE_FILE", "MAX_ERROR_MESSAGE_CHARS", "RESULT_FILE",
    "SPEC_FILE", "Auto", "EventLog", "Hyperparameters", "JobDir", "JobError", "JobSpec", "preflight",
    "read_events", "read_events_bytes", "write_json_atomic",
]

MAX_ERROR_MESSAGE_CHARS = 8_000


class JobError(SlipwayError):
    """The job cannot go on; `code` and `param` are the fields of OpenAI's fine-tuning job error."""

    status_code = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message, code=code)
        self.param = param

    def as_openai(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message[:MAX_ERROR_MESSAGE_CHARS], "param": self.param}


@dataclass(frozen=True)
class JobDir:
    """The paths of one job's folder."""

    root: Path

    @property
    def spec_path(self) -> Path:
        return self.root / SPEC_FILE

    @property
    def events_path(self) -> Path:
        return self.root / EVENTS_FILE

    @property
    def result_path(self) -> Path:
        return self.root / RESULT_FILE

    @property
    def error_path(self) -> Path:
        return self.root / ERROR_FILE

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    @property
    def adapter(self) -> Path:
        return self.root / ADAPTER_DIR

    def write_spec(self, spec: JobSpec) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.spec_path, spec.model_dump(mode="json"))

    def read_spec(self) -> JobSpec:
        """The job's spec; JobError listing every problem when job.json is missing or invalid."""
        if not self.spec_path.is_file():
            raise JobError(f"{self.spec_path} does not exist; write the job's spec there before starting it",
                           code="invalid_job_spec")
        try:
            return JobSpec.model_validate_json(self.spec_path.read_bytes())
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'job'}: {e['msg']}" for e in exc.errors())
            raise JobError(f"{self.spec_path} is not a valid job spec: {problems}", code="invalid_job_spec") from None


def preflight(spec: JobSpec, job_dir: JobDir) -> None:
    """Check what can be checked without loading the model: the base model folder and both files.

    Raises JobError naming the field (`model`, `training_file`, `validation_file`) at fault.
    """
    base = spec.resolved_path(job_dir.root, spec.base_model)
    if not (base / "config.json").is_file():
        what = "does not exist" if not base.exists() else "has no config.json"
        raise JobError(f"unknown base model: the folder {base} {what}; point base_model at a Hugging Face "
                       "model folder (config.json, weights, tokenizer)", code="invalid_base_model", param="model")
    for param, value in (("training_file", spec.training_file), ("validation_file", spec.validation_file)):
        if value is None:
            continue
        path = spec.resolved_path(job_dir.root, value)
        if not path.is_file():
            raise JobError(f"{param} {path} does not exist", code=f"invalid_{param}", param=param)
        report = validate_file(path)
        if not report.ok:
            listed = "; ".join(str(p) for p in report.errors[:20])
            more = f"; and {len(report.errors) - 20} more" if len(report.errors) > 20 else ""
            raise JobError(f"{param} {path} has {len(report.errors)} bad line(s): {listed}{more}",
                           code=f"invalid_{param}", param=param)
        if report.stats.num_rows == 0 and param == "training_file":
            raise JobError(f"training_file {path} has no rows; add at least one chat example",
                           code="invalid_training_file", param=param)


class EventLog:
    """events.jsonl: append-only, one JSON object per line, `seq` continuing across restarts.

    Each line is written with one O_APPEND write and flushed, so a killed process leaves at most a
    torn last line; opening the log cuts such a line off before appending.

        {"seq": 7, "created_at": 1730000000.1, "level": "info", "type": "metrics",
         "message": "Step 3/20: training loss=1.234", "data": {"step": 3, "total_steps": 20, ...}}
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._next_seq = self._repair_and_count()

    def append(self, message: str, *, level: str = "info", type: str = "message",
               data: dict[str, Any] | None = None) -> dict[str, Any]:
        event = {"seq": self._next_seq, "created_at": self._clock(), "level": level, "type": type,
                 "message": message, "data": data}
        line = (json.dumps(event, separators=(",", ":"), allow_nan=False, default=str) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        self._next_seq += 1
        return event

    def _repair_and_count(self) -> int:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return 0
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            with open(self.path, "r+b") as handle:
                handle.truncate(len(data))
        events = read_events_bytes(data)
        return events[-1]["seq"] + 1 if events else 0


def read_events(path: Path) -> list[dict[str, Any]]:
    """The complete events of an events.jsonl (a torn last line is skipped); [] if there is none."""
    try:
        return read_events_bytes(path.read_bytes())
    except FileNotFoundError:
        return []


def read_events_bytes(data: bytes) -> list[dict[str, Any]]:
    events = []
    for line in data.split(b"\n"):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("seq"), int):
            events.append(event)
    return events


def write_json_atomic(path: Path, value: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never a torn one."""
    write_atomic(path, (json.dumps(value, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8"))
