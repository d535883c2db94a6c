"""LoRA SFT on a tiny random Llama: deterministic, checkpointed, resumable to the same adapter, with lineage."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from slipway.train.checkpoints import list_checkpoints
from slipway.train.datasets import content_hash
from slipway.train.job import EventLog, JobDir, JobError, JobSpec, read_events
from slipway.train.lora import Plan, epoch_order, train_lora_sft

from .conftest import chat_row, write_jsonl

ROWS = [chat_row(i) for i in range(10)]
HYPER = {"n_epochs": 2, "batch_size": 3, "learning_rate_multiplier": 5.0, "checkpoint_every_steps": 3,
         "keep_checkpoints": 10, "lora_rank": 4, "lora_dropout": 0.1}  # 4 steps per epoch, 8 in all


class Crash(Exception):
    """Stands in for the process dying."""


def _job(tmp_path, base, name="job", *, seed=3, rows=ROWS, validation=ROWS[:3], **hyper) -> JobDir:
    job_dir = JobDir(tmp_path / name)
    job_dir.root.mkdir()
    write_jsonl(job_dir.root / "train.jsonl", rows)
    if validation:
        write_jsonl(job_dir.root / "valid.jsonl", validation)
    job_dir.write_spec(JobSpec(job_id=f"ftjob-{name}", base_model=str(base), base_model_name="tiny",
                               training_file="train.jsonl", validation_file="valid.jsonl" if validation else None,
                               seed=seed, num_threads=1, hyperparameters={**HYPER, **hyper}))
    return job_dir


def _run(job_dir: JobDir, *, crash_at: int | None = None, stop_after: int | None = None):
    events = EventLog(job_dir.events_path)

    def emit(message, **fields):
        event = events.append(message, **fields)
        if crash_at is not None and fields.get("type") == "metrics" and event["data"]["step"] == crash_at:
            raise Crash()

    steps_done = lambda: [e["data"]["step"] for e in read_events(job_dir.events_path) if e["type"] == "metrics"]
    should_stop = (lambda: steps_done()[-1] >= stop_after) if stop_after else (lambda: False)
    return train_lora_sft(job_dir.read_spec(), job_dir, emit=emit, should_stop=should_stop)


def _adapter(folder) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def _metric_steps(job_dir: JobDir) -> list[int]:
    return [e["data"]["step"] for e in read_events(job_dir.events_path) if e["type"] == "metrics"]


def test_plan_resolves_auto_and_orders_rows_by_seed_and_epoch():
    plan = Plan.make(JobSpec(base_model="m", training_file="t").hyperparameters, num_rows=20)
    assert (plan.hyperparameters.n_epochs, plan.hyperparameters.batch_size, plan.steps_per_epoch,
            plan.total_steps, plan.hyperparameters.checkpoint_every_steps) == (3, 8, 3, 9, 3)
    assert epoch_order(20, 1, 0) == epoch_order(20, 1, 0) != epoch_order(20, 1, 1)
    epoch, rows = plan.rows_of_step(4, seed=1)
    assert epoch == 2 and rows == epoch_order(20, 1, 1)[:8]
    assert len(plan.rows_of_step(3, seed=1)[1]) == 4  # the last batch of an epoch holds what is left


def test_same_seed_gives_the_same_adapter_and_another_seed_does_not(tmp_path, tiny_llama):
    first = _run(_job(tmp_path, tiny_llama, "a"))
    second = _run(_job(tmp_path, tiny_llama, "b"))
    other = _run(_job(tmp_path, tiny_llama, "c", seed=4))
    a, b, c = _adapter(first.adapter_dir), _adapter(second.adapter_dir), _adapter(other.adapter_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_resume_after_a_crash_continues_the_steps_and_ends_with_the_same_adapter(tmp_path, tiny_llama):
    straight = _run(_job(tmp_path, tiny_llama, "straight"))
    job_dir = _job(tmp_path, tiny_llama, "crashed")
    with pytest.raises(Crash):
        _run(job_dir, crash_at=5)  # after the checkpoint at step 3, before the one at step 6
    assert [c.step for c in list_checkpoints(job_dir.checkpoints)] == [3]
    resumed = _run(job_dir)

    events = read_events(job_dir.events_path)
    [resume] = [e for e in events if e["message"].startswith("Resumed")]
    assert resume["data"]["step"] == 3
    after_resume = [e["data"]["step"] for e in events[events.index(resume):] if e["type"] == "metrics"]
    assert after_resume == [4, 5, 6, 7, 8]
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert resumed.step == straight.step == 8
    assert resumed.trained_tokens == straight.trained_tokens
    a, b = _adapter(straight.adapter_dir), _adapter(resumed.adapter_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics == {**straight.metrics, "step_seconds": resumed.metrics["step_seconds"]}


def test_a_stop_saves_a_checkpoint_and_the_next_start_continues_after_it(tmp_path, tiny_llama):
    job_dir = _job(tmp_path, tiny_llama, checkpoint_every_steps=100)
    stopped = _run(job_dir, stop_after=2)
    assert (stopped.stopped, stopped.step, stopped.adapter_dir) == (True, 2, None)
    assert [c.step for c in list_checkpoints(job_dir.checkpoints)] == [2]
    finished = _run(job_dir)
    assert not finished.stopped and _metric_steps(job_dir) == list(range(1, 9))
    assert [c.step for c in list_checkpoints(job_dir.checkpoints)] == [2, 8]


def test_checkpoints_hold_everything_to_resume_and_old_ones_are_pruned(tmp_path, tiny_llama):
    job_dir = _job(tmp_path, tiny_llama, checkpoint_every_steps=2, keep_checkpoints=2)
    _run(job_dir)
    checkpoints = list_checkpoints(job_dir.checkpoints)
    assert [c.step for c in checkpoints] == [6, 8]
    latest = checkpoints[-1]
    assert (latest.adapter / "adapter_config.json").is_file() and latest.training_state.is_file()
    assert latest.state["step"] == 8 and latest.state["metrics"]["valid_loss"] > 0
    assert [c["step"] for c in latest.state["checkpoints"]] == [2, 4, 6, 8]
    assert not [p for p in job_dir.checkpoints.iterdir() if p.name.startswith(".")]


def test_lineage_names_the_base_model_data_settings_and_metrics(tmp_path, tiny_llama):
    outcome = _run(_job(tmp_path, tiny_llama))
    lineage = json.loads((outcome.adapter_dir / "lineage.json").read_text())
    assert lineage == outcome.lineage
    assert lineage["base_model"]["path"] == str(tiny_llama) and lineage["base_model"]["name"] == "tiny"
    assert lineage["dataset"]["content_hash"] == content_hash(ROWS) and lineage["dataset"]["rows"] == 10
    assert lineage["dataset"]["validation_content_hash"] == content_hash(ROWS[:3])
    assert lineage["hyperparameters"]["batch_size"] == 3 and lineage["hyperparameters"]["lora_rank"] == 4
    assert (lineage["seed"], lineage["steps"], lineage["epochs"]) == (3, 8, 2)
    assert [c["step"] for c in lineage["metrics"]["checkpoints"]] == [3, 6, 8]
    assert lineage["software"]["peft"]


def test_training_lowers_the_loss_and_the_adapter_loads_with_peft(tmp_path, tiny_llama):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job_dir = _job(tmp_path, tiny_llama, rows=ROWS[:4], n_epochs=20, batch_size=4, learning_rate_multiplier=20.0,
                   lora_dropout=0.0, checkpoint_every_steps=100)
    outcome = _run(job_dir)
    losses = [e["data"]["train_loss"] for e in read_events(job_dir.events_path) if e["type"] == "metrics"]
    assert losses[-1] < losses[0] * 0.5
    checkpoint_valid = outcome.lineage["metrics"]["checkpoints"][-1]["valid_loss"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), outcome.adapter_dir)
    assert any("lora_A" in name for name, _ in model.named_parameters())
    assert checkpoint_valid < losses[0]


def test_resuming_with_a_different_spec_is_refused(tmp_path, tiny_llama):
    job_dir = _job(tmp_path, tiny_llama)
    with pytest.raises(Crash):
        _run(job_dir, crash_at=4)
    spec = job_dir.read_spec()
    job_dir.write_spec(spec.model_copy(update={"seed": 99}))
    with pytest.raises(JobError, match="different seed") as caught:
        _run(job_dir)
    assert caught.value.code == "checkpoint_mismatch"


def test_rows_with_nothing_to_train_within_max_seq_len_are_skipped_with_a_warning(tmp_path, tiny_llama):
    long_row = {"messages": [{"role": "user", "content": "x" * 80}, {"role": "assistant", "content": "y"}]}
    job_dir = _job(tmp_path, tiny_llama, rows=[*ROWS[:3], long_row], validation=None, max_seq_len=64, n_epochs=1)
    outcome = _run(job_dir)
    [warning] = [e for e in read_events(job_dir.events_path) if e["level"] == "warn"]
    assert "rows 4" in warning["message"] and outcome.step == 1
    with pytest.raises(JobError, match="no training row") as caught:
        _run(_job(tmp_path, tiny_llama, "empty", rows=[long_row], validation=None, max_seq_len=64))
    assert caught.value.param == "training_file"
