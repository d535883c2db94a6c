"""LoRA supervised fine-tuning of a Hugging Face causal LM on chat rows: deterministic and resumable.

    outcome = train_lora_sft(spec, JobDir(path), emit=EventLog(path / "events.jsonl").append)

One optimizer step per batch of rows:

    JSONL rows ─► chat template, labels on assistant tokens only (chat_tokens)
               ─► row order of epoch e: a permutation seeded by (seed, e)
               ─► batch of step s ─► mean token loss ─► AdamW on the LoRA weights, linear LR schedule
    every N steps and after the last: validation loss, then a checkpoint (checkpoints.py)

Determinism: the seed fixes LoRA's initial weights, dropout and the row order, and the order of
any epoch is a pure function of (seed, epoch), so the data position of step s needs no state of
its own. The base model is float32 and, on CPU, two runs with the same spec give bit-identical
adapters. Resume: a checkpoint holds the adapter, AdamW's moments, the scheduler and the random
number generators' states as they were after step s; loading it and continuing at step s + 1
does exactly what the uninterrupted run did, so the final adapter is the same.

The outcome is the adapter folder `adapter/` (PEFT format, loadable with `PeftModel.from_pretrained`)
with `lineage.json`: the base model, dataset hashes, hyperparameters, seed, steps and metrics.
"""

from __future__ import annotations

import hashlib
import math
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from slipway.train.batches import batch_loss, collate, validation_loss
from slipway.train.chat_tokens import EncodedRow, check_tokenizer, encode_rows
from slipway.train.checkpoints import Checkpoint, latest_checkpoint, prune, remove_partial, write_checkpoint
from slipway.train.dataset_format import load_rows
from slipway.train.datasets import content_hash
from slipway.train.job import (
    BASE_LEARNING_RATE,
    LINEAGE_FILE,
    Hyperparameters,
    JobDir,
    JobError,
    JobSpec,
    write_json_atomic,
)

ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"


class Emit(Protocol):
    def __call__(self, message: str, *, level: str = "info", type: str = "message",
                 data: dict[str, Any] | None = None) -> Any: ...


@dataclass(frozen=True)
class Plan:
    """The resolved shape of a run: what every step does follows from this and the seed."""

    hyperparameters: Hyperparameters
    num_rows: int
    steps_per_epoch: int
    total_steps: int
    learning_rate: float

    @classmethod
    def make(cls, hyperparameters: Hyperparameters, num_rows: int) -> Plan:
        resolved = hyperparameters.resolve(num_rows)
        steps_per_epoch = math.ceil(num_rows / resolved.batch_size)
        return cls(hyperparameters=resolved, num_rows=num_rows, steps_per_epoch=steps_per_epoch,
                   total_steps=steps_per_epoch * resolved.n_epochs,
                   learning_rate=BASE_LEARNING_RATE * resolved.learning_rate_multiplier)

    def rows_of_step(self, step: int, seed: int) -> tuple[int, list[int]]:
        """The epoch (1-based) and the row indices of step `step` (1-based)."""
        epoch, position = divmod(step - 1, self.steps_per_epoch)
        order = epoch_order(self.num_rows, seed, epoch)
        size = self.hyperparameters.batch_size
        return epoch + 1, order[position * size:(position + 1) * size]

    def is_checkpoint_step(self, step: int) -> bool:
        return step % self.hyperparameters.checkpoint_every_steps == 0 or step == self.total_steps


@dataclass
class Outcome:
    """How a call of `train_lora_sft` ended: finished (with an adapter) or stopped at a checkpoint."""

    stopped: bool
    step: int
    total_steps: int
    trained_tokens: int
    metrics: dict[str, Any]
    adapter_dir: Path | None = None
    lineage: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Progress:
    """What the loop carries from step to step; saved in every checkpoint's state.json."""

    step: int = 0
    trained_tokens: int = 0
    last: dict[str, Any] = field(default_factory=dict)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)


def epoch_order(num_rows: int, seed: int, epoch: int) -> list[int]:
    """The order rows are visited in during `epoch` (0-based): a seeded permutation, the same every time."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_rows, generator=generator).tolist()


def train_lora_sft(spec: JobSpec, job_dir: JobDir, *, emit: Emit,
                   should_stop: Callable[[], bool] = lambda: False) -> Outcome:
    """Train (or resume training) the job's adapter; returns when done or when `should_stop()` turns true.

    A stop saves a checkpoint first, so starting again continues from the step it stopped after.
    Raises JobError for problems with the model, data or checkpoints.
    """
    if spec.num_threads:
        torch.set_num_threads(spec.num_threads)
    device = _device(spec.device)
    base_path = spec.resolved_path(job_dir.root, spec.base_model)
    tokenizer = _load_tokenizer(base_path)
    data = _load_data(spec, job_dir, tokenizer, emit)
    train_set, validation_set = data.train_set, data.validation_set

    plan = Plan.make(spec.hyperparameters, len(train_set))
    fingerprint = {"seed": spec.seed, "train_hash": content_hash(data.train_rows), "total_steps": plan.total_steps,
                   "hyperparameters": plan.hyperparameters.model_dump(mode="json")}

    torch.manual_seed(spec.seed)
    random.seed(spec.seed)
    model = _load_model(base_path, device)
    model = get_peft_model(model, _lora_config(plan.hyperparameters))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=plan.learning_rate, weight_decay=plan.hyperparameters.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _linear_schedule(plan))
    pad_id = _pad_id(tokenizer)

    remove_partial(job_dir.checkpoints)
    progress = _Progress()
    resumed = latest_checkpoint(job_dir.checkpoints)
    if resumed is not None:
        progress = _restore(resumed, fingerprint, model, optimizer, scheduler, device)
        emit(f"Resumed from the checkpoint at step {progress.step}; training continues at step "
             f"{progress.step + 1}", data={"step": progress.step, "total_steps": plan.total_steps,
                                             "checkpoint": str(resumed.path)})
    else:
        tokens = sum(len(r.input_ids) for r in train_set)
        emit(f"Fine-tuning started: {plan.num_rows} rows ({tokens} tokens), {plan.hyperparameters.n_epochs} "
             f"epoch(s), {plan.total_steps} steps of batch {plan.hyperparameters.batch_size}",
             data={"total_steps": plan.total_steps, "rows": plan.num_rows, "tokens": tokens,
                   "validation_rows": len(validation_set),
                   "hyperparameters": plan.hyperparameters.model_dump(mode="json"),
                   "trainable_parameters": sum(p.numel() for p in trainable)})

    model.train()
    for step in range(progress.step + 1, plan.total_steps + 1):
        started = time.perf_counter()
        epoch, indices = plan.rows_of_step(step, spec.seed)
        batch = collate([train_set[i] for i in indices], pad_id, device)
        learning_rate = scheduler.get_last_lr()[0]
        loss, accuracy = batch_loss(model, batch)
        if not torch.isfinite(loss):
            raise JobError(f"the training loss became {loss.item()} at step {step}; lower "
                           "learning_rate_multiplier or check the training rows", code="training_diverged",
                           param="hyperparameters")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, plan.hyperparameters.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        tokens = int(batch["attention_mask"].sum())
        progress.step = step
        progress.trained_tokens += tokens
        progress.last = {"step": step, "total_steps": plan.total_steps, "epoch": epoch,
                         "train_loss": round(loss.item(), 6), "train_mean_token_accuracy": round(accuracy, 6),
                         "learning_rate": learning_rate, "tokens": tokens,
                         "step_seconds": round(time.perf_counter() - started, 4)}
        emit(f"Step {step}/{plan.total_steps}: training loss={loss.item():.4f}", type="metrics",
             data=dict(progress.last))

        stopping = step < plan.total_steps and should_stop()
        if plan.is_checkpoint_step(step) or stopping:
            if validation_set:
                progress.last["valid_loss"] = round(validation_loss(
                    model, validation_set, plan.hyperparameters.batch_size, pad_id, device), 6)
            progress.checkpoints.append({k: progress.last[k] for k in ("step", "train_loss", "valid_loss")
                                         if k in progress.last})
            checkpoint = _save(job_dir, progress, fingerprint, model, optimizer, scheduler, device)
            deleted = prune(job_dir.checkpoints, plan.hyperparameters.keep_checkpoints)
            valid = f", validation loss={progress.last['valid_loss']:.4f}" if "valid_loss" in progress.last else ""
            emit(f"Checkpoint created at step {step}{valid}",
                 data={"step": step, "total_steps": plan.total_steps, "path": str(checkpoint.path),
                       "metrics": dict(progress.last), "pruned_steps": deleted})
        if stopping:
            return Outcome(stopped=True, step=step, total_steps=plan.total_steps,
                           trained_tokens=progress.trained_tokens, metrics=dict(progress.last))

    lineage = _lineage(spec, job_dir, base_path, plan, progress, data.train_rows, data.validation_rows)
    _write_adapter(model, job_dir.adapter, lineage)
    emit(f"New fine-tuned adapter created at {job_dir.adapter}",
         data={"step": progress.step, "total_steps": plan.total_steps, "adapter": str(job_dir.adapter),
               "trained_tokens": progress.trained_tokens})
    return Outcome(stopped=False, step=progress.step, total_steps=plan.total_steps,
                   trained_tokens=progress.trained_tokens, metrics=dict(progress.last), adapter_dir=job_dir.adapter,
                   lineage=lineage)


# ---- model and data ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Data:
    train_rows: list[dict[str, Any]]
    train_set: list[EncodedRow]
    validation_rows: list[dict[str, Any]]
    validation_set: list[EncodedRow]


def _load_data(spec: JobSpec, job_dir: JobDir, tokenizer: Any, emit: Emit) -> _Data:
    """The rows as read (for hashes) and as encoded; rows with nothing to train on are left out with a warning."""
    max_seq_len = spec.hyperparameters.max_seq_len
    train_rows = load_rows(spec.resolved_path(job_dir.root, spec.training_file))
    train_set, dropped = encode_rows(tokenizer, train_rows, max_seq_len, param="training_file")
    if dropped:
        emit(f"{len(dropped)} training row(s) have no assistant tokens within max_seq_len={max_seq_len} "
             f"and are skipped: rows {_numbers(dropped)}", level="warn")
    if not train_set:
        raise JobError("no training row has an assistant message to learn from within max_seq_len "
                       f"({max_seq_len} tokens); raise max_seq_len or shorten the conversations",
                       code="invalid_training_file", param="training_file")
    validation_rows: list[dict[str, Any]] = []
    validation_set: list[EncodedRow] = []
    if spec.validation_file:
        validation_rows = load_rows(spec.resolved_path(job_dir.root, spec.validation_file))
        validation_set, _ = encode_rows(tokenizer, validation_rows[:spec.max_validation_rows], max_seq_len,
                                        param="validation_file")
    return _Data(train_rows, train_set, validation_rows, validation_set)


def _device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise JobError("device is cuda but no CUDA device is available here; use device cpu or auto",
                       code="device_unavailable", param="device")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _load_tokenizer(path: Path) -> Any:
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # transformers raises many kinds for a bad folder
        raise JobError(f"cannot load the tokenizer of the base model {path}: {type(exc).__name__}: {exc}",
                       code="invalid_base_model", param="model") from exc
    check_tokenizer(tokenizer, str(path))
    return tokenizer


def _load_model(path: Path, device: torch.device) -> torch.nn.Module:
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except Exception as exc:
        raise JobError(f"cannot load the base model {path} as a causal language model: {type(exc).__name__}: {exc}",
                       code="invalid_base_model", param="model") from exc
    model.config.use_cache = False
    return model.to(device)


def _lora_config(hp: Hyperparameters) -> LoraConfig:
    return LoraConfig(r=hp.lora_rank, lora_alpha=hp.lora_alpha, lora_dropout=hp.lora_dropout,
                      target_modules=hp.lora_target_modules, task_type="CAUSAL_LM", bias="none")


def _pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def _linear_schedule(plan: Plan) -> Callable[[int], float]:
    """Learning-rate factor for 0-based step i: linear warm-up, then linear decay that ends above zero."""
    warmup = min(plan.hyperparameters.warmup_steps, plan.total_steps)
    decay_steps = max(1, plan.total_steps - warmup)

    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        return max(0.0, (plan.total_steps - i) / decay_steps)

    return factor


# ---- checkpoints ---------------------------------------------------------------------------------

def _save(job_dir: JobDir, progress: _Progress, fingerprint: dict[str, Any], model: Any,
          optimizer: torch.optim.Optimizer, scheduler: Any, device: torch.device) -> Checkpoint:
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()

    def contents(folder: Path) -> None:
        model.save_pretrained(folder / "adapter")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng},
                   folder / "training_state.pt")

    state = {"step": progress.step, "trained_tokens": progress.trained_tokens, "metrics": progress.last,
             "checkpoints": progress.checkpoints, "fingerprint": fingerprint, "created_at": time.time()}
    return write_checkpoint(job_dir.checkpoints, progress.step, state, contents)


def _restore(checkpoint: Checkpoint, fingerprint: dict[str, Any], model: Any, optimizer: torch.optim.Optimizer,
             scheduler: Any, device: torch.device) -> _Progress:
    saved = checkpoint.state.get("fingerprint")
    if saved != fingerprint:
        differing = sorted(k for k in fingerprint if (saved or {}).get(k) != fingerprint[k])
        raise JobError(f"the checkpoint {checkpoint.path} was written by a run with a different "
                       f"{', '.join(differing)}; restore the original job spec and data, or delete "
                       f"{checkpoint.path.parent} to start over", code="checkpoint_mismatch")
    set_peft_model_state_dict(model, load_file(checkpoint.adapter / ADAPTER_WEIGHTS_FILE, device=str(device)))
    training_state = torch.load(checkpoint.training_state, map_location=device, weights_only=True)
    optimizer.load_state_dict(training_state["optimizer"])
    scheduler.load_state_dict(training_state["scheduler"])
    rng = training_state["rng"]
    torch.set_rng_state(rng["torch"].cpu())
    random.setstate(_as_python_rng_state(rng["python"]))
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state_all(rng["cuda"])
    state = checkpoint.state
    return _Progress(step=state["step"], trained_tokens=state["trained_tokens"], last=dict(state["metrics"]),
                     checkpoints=list(state["checkpoints"]))


def _as_python_rng_state(state: Any) -> tuple:
    version_, internal, gauss = state
    return version_, tuple(internal), gauss


# ---- output --------------------------------------------------------------------------------------

def _write_adapter(model: Any, destination: Path, lineage: dict[str, Any]) -> None:
    """Save the adapter and lineage.json into a temporary folder, then rename it into place."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".tmp-{destination.name}-"))
    try:
        model.save_pretrained(tmp)
        write_json_atomic(tmp / LINEAGE_FILE, lineage)
        if destination.exists():
            shutil.rmtree(destination)
        tmp.rename(destination)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _lineage(spec: JobSpec, job_dir: JobDir, base_path: Path, plan: Plan, progress: _Progress,
             train_rows: list[dict[str, Any]], validation_rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "job_id": spec.job_id,
        "base_model": {"name": spec.base_model_name, "path": str(base_path),
                       "fingerprint": base_model_fingerprint(base_path)},
        "dataset": {
            "training_file": str(spec.resolved_path(job_dir.root, spec.training_file)),
            "content_hash": content_hash(train_rows), "rows": len(train_rows),
            "validation_file": (str(spec.resolved_path(job_dir.root, spec.validation_file))
                                if spec.validation_file else None),
            "validation_content_hash": content_hash(validation_rows) if spec.validation_file else None,
            "validation_rows": len(validation_rows),
        },
        "method": "lora_sft",
        "hyperparameters": plan.hyperparameters.model_dump(mode="json"),
        "learning_rate": plan.learning_rate,
        "seed": spec.seed,
        "steps": progress.step,
        "epochs": plan.hyperparameters.n_epochs,
        "trained_tokens": progress.trained_tokens,
        "metrics": {"final": progress.last, "checkpoints": progress.checkpoints},
        "software": {name: _version(name) for name in ("torch", "transformers", "peft", "slipway")},
    }


def base_model_fingerprint(path: Path) -> str:
    """sha256 over config.json and the names and sizes of the weight files: cheap, and changes with the weights."""
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(f"\n{weights.name}:{weights.stat().st_size}".encode())
    return digest.hexdigest()


def _version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _numbers(numbers: list[int], shown: int = 20) -> str:
    text = ", ".join(str(n) for n in numbers[:shown])
    return text + (f" and {len(numbers) - shown} more" if len(numbers) > shown else "")
