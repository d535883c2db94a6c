"""Fine-tuning on the wire and on disk: a job's spec and hyperparameters, its folder's file names,
and OpenAI's fine-tuning job, event and checkpoint objects. No I/O here.

Who reads what:

    JobSpec, Hyperparameters   job.json, written by the control plane, read by the job process
                               (`python -m slipway.train.worker --job-dir DIR`)
    SPEC_FILE ... ERROR_FILE   the names inside a job folder (layout in `slipway.train.job`)
    JOB_EXIT_*                 what the job process's exit code means
    FineTuningJobCreate        POST /api/v1/fine_tuning/jobs, as OpenAI's client sends it
    FineTuningJobObject, ...   what the fine-tuning routes answer, in OpenAI's shape

A fine-tuned model is registered under `fine_tuned_model_name(base, job_id, suffix)`:
`<base>:ft-<suffix>`, or `<base>:ft-<job id's hex>` without a suffix or when that name is taken.
OpenAI writes `ft:<base>:<org>:<suffix>:<id>`; ours keeps the base model first so listings sort a
base and its fine-tunes together, and the colon cannot occur in a package's model name, so a
fine-tune never collides with a deployed package.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Auto = Literal["auto"]
# The learning rate a multiplier of 1.0 means. LoRA adapters train well around 1e-4 to 3e-4.
BASE_LEARNING_RATE = 2e-4
AUTO_EPOCHS = 3
AUTO_BATCH_SIZE = 8
# With "auto", a checkpoint every epoch, but at least this often so a crash loses little work.
AUTO_CHECKPOINT_MAX_STEPS = 50

# A job folder's files.
SPEC_FILE = "job.json"
EVENTS_FILE = "events.jsonl"
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
CHECKPOINTS_DIR = "checkpoints"
ADAPTER_DIR = "adapter"
LINEAGE_FILE = "lineage.json"

# The job process's exit codes.
JOB_EXIT_SUCCEEDED = 0
JOB_EXIT_FAILED = 1
# EX_TEMPFAIL: stopped by SIGTERM after saving a checkpoint; starting it again resumes.
JOB_EXIT_STOPPED = 75

FINE_TUNED_MARKER = ":ft-"
SUFFIX_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"


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


def fine_tuned_model_name(base: str, job_id: str, suffix: str | None = None) -> str:
    """`<base>:ft-<suffix>`, or `<base>:ft-<the job id without 'ftjob-'>` when there is no suffix."""
    return f"{base}{FINE_TUNED_MARKER}{suffix or job_id.removeprefix('ftjob-')}"


def checkpoint_model_name(fine_tuned_model: str, step: int) -> str:
    """`<fine-tuned model>:ckpt-step-<N>`: OpenAI's `fine_tuned_model_checkpoint`, callable like a model."""
    return f"{fine_tuned_model}:ckpt-step-{step}"


# ---- POST /api/v1/fine_tuning/jobs -----------------------------------------------------------------

class SupervisedMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    """OpenAI's `method`; slipway trains LoRA adapters with supervised fine-tuning only."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised"] = Field(description="supervised (dpo and reinforcement are not offered).")
    supervised: SupervisedMethod | None = None


class FineTuningJobCreate(BaseModel):
    """A fine-tuning job as OpenAI's `client.fine_tuning.jobs.create(...)` sends it."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=100, description="A model of the workspace whose production or "
                                                                "development deployment is an llm package.")
    training_file: str = Field(min_length=1, max_length=40, description="Dataset id (ds-...) to train on.")
    validation_file: str | None = Field(None, max_length=40, description="Dataset id of held-out rows; default: "
                                                                        "the training dataset's validation split.")
    hyperparameters: Hyperparameters | None = Field(None, description="OpenAI's n_epochs, batch_size, "
                                                                      "learning_rate_multiplier, plus LoRA settings.")
    suffix: str | None = Field(None, pattern=SUFFIX_PATTERN,
                               description="Up to 32 lowercase letters, digits and dashes for the model's name.")
    seed: int | None = Field(None, ge=0, lt=2**31, description="Makes the run repeatable; default: a random one.")
    method: Method | None = Field(None, description='{"type": "supervised", "supervised": {"hyperparameters": '
                                                    "{...}}}: the same hyperparameters, OpenAI's newer way.")
    integrations: list[dict[str, Any]] | None = Field(None, description="Not offered; leave it out.")
    metadata: dict[str, str] | None = Field(None, description="Not offered; leave it out.")

    @model_validator(mode="after")
    def _one_place_for_hyperparameters(self) -> FineTuningJobCreate:
        in_method = self.method.supervised.hyperparameters if self.method and self.method.supervised else None
        if self.hyperparameters is not None and in_method is not None:
            raise ValueError("give hyperparameters either at the top level or in method.supervised, not both")
        if self.integrations:
            raise ValueError("integrations are not offered; leave them out")
        if self.metadata:
            raise ValueError("metadata is not offered; leave it out")
        return self

    def chosen_hyperparameters(self) -> Hyperparameters:
        in_method = self.method.supervised.hyperparameters if self.method and self.method.supervised else None
        return self.hyperparameters or in_method or Hyperparameters()


# ---- what the routes answer -----------------------------------------------------------------------

class FineTuningError(BaseModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJobObject(BaseModel):
    """OpenAI's `fine_tuning.job`, with slipway's `suffix` added."""

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: FineTuningError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: dict[str, Any] = Field(description="As asked for until the job starts; then resolved "
                                                        "(no \"auto\" left).")
    model: str
    organization_id: str = Field(description="The workspace's id.")
    result_files: list[str] = Field(default_factory=list)
    seed: int
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    method: dict[str, Any] | None = None
    suffix: str | None = None


class FineTuningEventObject(BaseModel):
    """OpenAI's `fine_tuning.job.event`."""

    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"] = "message"
    data: dict[str, Any] | None = None


class FineTuningCheckpointObject(BaseModel):
    """OpenAI's `fine_tuning.job.checkpoint`; `metrics` carries the trainer's numbers at that step."""

    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, Any]
    step_number: int
