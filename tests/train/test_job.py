"""Job specs, hyperparameters with "auto", the append-only event log, and the checks before training."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from slipway.train.job import EventLog, Hyperparameters, JobDir, JobError, JobSpec, preflight, read_events

from .conftest import chat_row, write_jsonl


def test_auto_hyperparameters_resolve_from_the_row_count():
    resolved = Hyperparameters().resolve(num_train_rows=5)
    assert (resolved.n_epochs, resolved.batch_size, resolved.learning_rate_multiplier,
            resolved.checkpoint_every_steps) == (3, 5, 1.0, 1)
    big = Hyperparameters().resolve(num_train_rows=10_000)
    assert (big.batch_size, big.checkpoint_every_steps) == (8, 50)
    fixed = Hyperparameters(n_epochs=2, batch_size=4, learning_rate_multiplier=0.5, checkpoint_every_steps=7)
    assert fixed.resolve(100) == fixed


def test_hyperparameters_refuse_bad_values_and_unknown_fields():
    with pytest.raises(ValidationError) as caught:
        Hyperparameters(n_epochs=0, lora_dropout=1.5, batch_size="many")
    assert {e["loc"][0] for e in caught.value.errors()} == {"n_epochs", "lora_dropout", "batch_size"}
    with pytest.raises(ValidationError, match="extra"):
        Hyperparameters(learning_rate=0.1)


def test_spec_paths_may_be_relative_to_the_job_folder(tmp_path):
    job_dir = JobDir(tmp_path)
    job_dir.write_spec(JobSpec(base_model="/models/m", training_file="train.jsonl"))
    spec = job_dir.read_spec()
    assert spec.resolved_path(tmp_path, spec.training_file) == tmp_path / "train.jsonl"
    assert spec.resolved_path(tmp_path, spec.base_model).as_posix() == "/models/m"


def test_missing_spec_says_where_it_should_be(tmp_path):
    with pytest.raises(JobError, match="job.json does not exist") as caught:
        JobDir(tmp_path).read_spec()
    assert caught.value.code == "invalid_job_spec"


def test_event_log_continues_seq_and_cuts_a_torn_last_line(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path, clock=lambda: 5.0)
    log.append("one")
    log.append("two", type="metrics", data={"step": 1, "total_steps": 2, "train_loss": 1.5})
    with open(path, "ab") as handle:
        handle.write(b'{"seq": 2, "message": "tor')  # a kill in the middle of a write
    assert [e["seq"] for e in read_events(path)] == [0, 1]
    reopened = EventLog(path, clock=lambda: 6.0)
    assert reopened.append("three")["seq"] == 2
    events = read_events(path)
    assert [(e["seq"], e["message"]) for e in events] == [(0, "one"), (1, "two"), (2, "three")]
    assert events[1] == {"seq": 1, "created_at": 5.0, "level": "info", "type": "metrics", "message": "two",
                         "data": {"step": 1, "total_steps": 2, "train_loss": 1.5}}
    assert path.read_bytes().count(b"\n") == 3


def test_preflight_names_the_field_at_fault(tmp_path, tiny_llama):
    job_dir = JobDir(tmp_path)
    write_jsonl(tmp_path / "train.jsonl", [chat_row(1)])
    (tmp_path / "valid.jsonl").write_text('{"messages": []}\n')
    preflight(JobSpec(base_model=str(tiny_llama), training_file="train.jsonl"), job_dir)
    cases = [
        (JobSpec(base_model=str(tmp_path), training_file="train.jsonl"), "model", "has no config.json"),
        (JobSpec(base_model=str(tiny_llama), training_file="nope.jsonl"), "training_file", "does not exist"),
        (JobSpec(base_model=str(tiny_llama), training_file="train.jsonl", validation_file="valid.jsonl"),
         "validation_file", "line 1"),
    ]
    for spec, param, words in cases:
        with pytest.raises(JobError, match=words) as caught:
            preflight(spec, job_dir)
        error = caught.value.as_openai()
        assert error["param"] == param and error["code"] in ("invalid_base_model", f"invalid_{param}")


def test_an_empty_training_file_is_refused(tmp_path, tiny_llama):
    (tmp_path / "train.jsonl").write_text("\n\n")
    with pytest.raises(JobError, match="has no rows"):
        preflight(JobSpec(base_model=str(tiny_llama), training_file="train.jsonl"), JobDir(tmp_path))
