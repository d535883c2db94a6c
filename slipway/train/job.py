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
training rows is known. Nothing here imports torch, so a bad spec fails in well under a second.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slipway.errors import SlipwayError
from slipway.train.dataset_format import validate_file
from slipway.train.datasets import write_atomic

Auto = Literal["auto"]
# The learning rate a multiplier of 1.0 means. LoRA adapters train well around 1e-4 to 3e-4.
BASE_LEARNING_RATE = 2e-4
AUTO_EPOCHS = 3
AUTO_BATCH_SIZE = 8
# With "auto", a checkpoint every epoch, but at least this often so a crash loses little work.
AUTO_CHECKPOINT_MAX_STEPS = 50
SPEC_FILE = "job.json"
EVENTS_FILE = "events.jsonl"
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
CHECKPOINTS_DIR = "checkpoints"
ADAPTER_DIR = "adapter"
LINEAGE_FILE = "lineage.json"
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


class Hyperparameters(BaseModel):
    """How to train; OpenAI's three fields plus LoRA's. Every field has a default."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: Annotated[int, Field(ge=1, le=100)] | Auto = Field(
        "auto", description=f"Passes over the training rows; auto: {AUTO_EPOCHS}.")
    batch_size: Annotated[int, Field(ge=1, le=1024)] | Auto = Field(
        "auto", description=f"Rows per optimizer step; auto: {AUTO_BATCH_SIZE}, or fewer for a smaller dataset.")
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=100)] | Auto = Field(
        "auto", description=f"Scales the base learning rate {BASE_LEARNING_RATE}; auto: 1.0.")
    lora_rank: int = Field(8, ge=1, le=512, description="Rank r of each LoRA update matrix pair.")
    lora_alpha: int = Field(16, ge=1, le=4096, description="LoRA scaling numerator: updates scale by alpha / r.")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA branch's input.")
    lora_target_modules: Literal["all-linear"] | list[str] = Field(
        "all-linear", description='Module names to adapt (e.g. ["q_proj", "v_proj"]), or every linear layer '
                                  "except the output head.")
    checkpoint_every_steps: Annotated[int, Field(ge=1)] | Auto = Field(
        "auto", description=f"Save a resumable checkpoint every N steps (and after the last); auto: once per "
                            f"epoch, at least every {AUTO_CHECKPOINT_MAX_STEPS} steps.")
    keep_checkpoints: int = Field(3, ge=1, le=1000, description="Newest checkpoints kept on disk; older ones "
                                                                "are deleted.")
    max_seq_len: int = Field(1024, ge=16, le=131_072, description="Tokens per row; longer rows are cut at the end.")
    warmup_steps: int = Field(0, ge=0, description="Steps of linear learning-rate warm-up before the linear decay.")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW weight decay on the LoRA weights.")
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradients are clipped to this global norm.")

    def resolve(self, num_train_rows: int) -> Hyperparameters:
        """A copy with every "auto" replaced by a number, for `num_train_rows` training rows."""
        if num_train_rows < 1:
            raise ValueError("cannot resolve hyperparameters for an empty training set")
        batch_size = min(AUTO_BATCH_SIZE, num_train_rows) if self.batch_size == "auto" else self.batch_size
        steps_per_epoch = math.ceil(num_train_rows / batch_size)
        every = (min(steps_per_epoch, AUTO_CHECKPOINT_MAX_STEPS) if self.checkpoint_every_steps == "auto"
                 else self.checkpoint_every_steps)
        return self.model_copy(update={
            "n_epochs": AUTO_EPOCHS if self.n_epochs == "auto" else self.n_epochs,
            "batch_size": batch_size,
            "learning_rate_multiplier": 1.0 if self.learning_rate_multiplier == "auto"
            else self.learning_rate_multiplier,
            "checkpoint_every_steps": every,
        })


class JobSpec(BaseModel):
    """job.json: everything a job process needs to train one adapter."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field("job", min_length=1, max_length=100, description="The fine-tuning job's id (ftjob-...).")
    base_model: str = Field(min_length=1, description="Folder of the Hugging Face causal LM to adapt "
                                                      "(config.json, weights, tokenizer with a chat template).")
    base_model_name: str | None = Field(None, description="The model's name as the job was asked for it; "
                                                          "recorded in lineage.json.")
    training_file: str = Field(min_length=1, description="OpenAI chat fine-tuning JSONL of the training rows.")
    validation_file: str | None = Field(None, description="JSONL of held-out rows; their loss is measured at "
                                                          "every checkpoint.")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    seed: int = Field(0, ge=0, lt=2**31, description="Seeds LoRA's initial weights, dropout and the row order.")
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="Where to train; auto: cuda when present.")
    num_threads: int | None = Field(None, ge=1, le=1024, description="CPU threads for torch; default: torch's.")
    max_validation_rows: int = Field(256, ge=1, description="Validation loss uses at most this many rows, "
                                                            "the first ones in the file.")

    def resolved_path(self, job_dir: Path, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else job_dir / path


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
