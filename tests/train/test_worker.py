"""The job process: fails fast on bad input, survives SIGKILL by resuming from its checkpoint, stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from slipway.train.job import JobDir, JobSpec, read_events
from slipway.train.worker import EXIT_FAILED, EXIT_OK, EXIT_STOPPED, run_job

from .conftest import chat_row, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def _job(tmp_path, base, *, rows=40, epochs=3, every=10, base_model=None, name="job") -> JobDir:
    job_dir = JobDir(tmp_path / name)
    job_dir.root.mkdir()
    write_jsonl(job_dir.root / "train.jsonl", [chat_row(i) for i in range(rows)])
    write_jsonl(job_dir.root / "valid.jsonl", [chat_row(100 + i) for i in range(2)])
    job_dir.write_spec(JobSpec(
        job_id="ftjob-test", base_model=str(base_model or base), training_file="train.jsonl",
        validation_file="valid.jsonl", seed=1, num_threads=1,
        hyperparameters={"n_epochs": epochs, "batch_size": 1, "checkpoint_every_steps": every, "lora_rank": 4}))
    return job_dir


def _start(job_dir: JobDir) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "slipway.train.worker", "--job-dir", str(job_dir.root)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _metric_steps(events) -> list[int]:
    return [e["data"]["step"] for e in events if e["type"] == "metrics"]


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_restart_resumes_and_succeeds(tmp_path, tiny_llama):
    job_dir = _job(tmp_path, tiny_llama)  # 120 steps, a checkpoint every 10
    first = _start(job_dir)
    deadline = time.monotonic() + 120
    while not (job_dir.checkpoints / "step-10").is_dir():
        assert first.poll() is None, first.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    first.stderr.close()
    assert not job_dir.result_path.exists(), "the job finished before it could be killed"
    killed_at = max(_metric_steps(read_events(job_dir.events_path)))
    checkpoint = max(int(p.name.split("-")[1]) for p in job_dir.checkpoints.glob("step-*"))
    assert 10 <= checkpoint <= killed_at < 120

    second = _start(job_dir)
    _, stderr = second.communicate(timeout=300)
    assert second.returncode == EXIT_OK, stderr.decode()[-3000:]

    events = read_events(job_dir.events_path)
    [resume] = [e for e in events if e["message"].startswith("Resumed")]
    assert resume["data"] == {"step": checkpoint, "total_steps": 120,
                              "checkpoint": str(job_dir.checkpoints / f"step-{checkpoint}")}
    before, after = events[:events.index(resume)], events[events.index(resume):]
    assert set(range(1, checkpoint + 1)) <= set(_metric_steps(before))
    assert _metric_steps(after) == list(range(checkpoint + 1, 121))
    assert all("total_steps" in e["data"] and "train_loss" in e["data"] for e in after if e["type"] == "metrics")
    assert events[-1]["message"] == "The job has successfully completed"

    result = json.loads(job_dir.result_path.read_text())
    assert result["adapter_path"] == str(job_dir.adapter) and result["steps"] == 120
    assert result["trained_tokens"] > 0 and "valid_loss" in result["metrics"]
    assert (job_dir.adapter / "adapter_model.safetensors").is_file() and (job_dir.adapter / "lineage.json").is_file()
    assert not job_dir.error_path.exists()


def test_unknown_base_model_fails_fast_with_error_json(tmp_path, tiny_llama):
    job_dir = _job(tmp_path, tiny_llama, base_model=tmp_path / "no-such-model")
    started = time.monotonic()
    process = subprocess.run([sys.executable, "-m", "slipway.train.worker", "--job-dir", str(job_dir.root)],
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, timeout=120)
    assert process.returncode == EXIT_FAILED
    error = json.loads(job_dir.error_path.read_text())
    assert (error["code"], error["param"]) == ("invalid_base_model", "model")
    assert "no-such-model" in error["message"] and "does not exist" in error["message"]
    events = read_events(job_dir.events_path)
    assert [e["level"] for e in events] == ["error"] and not job_dir.checkpoints.exists()
    # Failing before torch is imported takes a moment, not the tens of seconds a model load can.
    assert time.monotonic() - started < 30


def test_bad_training_file_lists_each_bad_line(tmp_path, tiny_llama):
    job_dir = _job(tmp_path, tiny_llama)
    (job_dir.root / "train.jsonl").write_text(
        json.dumps(chat_row(1)) + "\nnot json\n" + json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n")
    assert run_job(job_dir) == EXIT_FAILED
    error = json.loads(job_dir.error_path.read_text())
    assert (error["code"], error["param"]) == ("invalid_training_file", "training_file")
    assert "line 2: invalid JSON" in error["message"] and "line 3: no assistant message" in error["message"]


def test_invalid_spec_is_reported_field_by_field(tmp_path, tiny_llama):
    job_dir = _job(tmp_path, tiny_llama)
    spec = json.loads(job_dir.spec_path.read_text())
    spec["hyperparameters"].update(n_epochs=0, lora_rank="big")
    job_dir.spec_path.write_text(json.dumps(spec))
    assert run_job(job_dir) == EXIT_FAILED
    message = json.loads(job_dir.error_path.read_text())["message"]
    assert "hyperparameters.n_epochs" in message and "hyperparameters.lora_rank" in message


def test_a_stop_exits_75_with_a_checkpoint_and_the_next_run_finishes(tmp_path, tiny_llama):
    job_dir = _job(tmp_path, tiny_llama, rows=6, epochs=1, every=100)
    stop = threading.Event()
    stop.set()  # as if SIGTERM arrived during the first step
    assert run_job(job_dir, stop=stop) == EXIT_STOPPED
    assert [p.name for p in job_dir.checkpoints.iterdir()] == ["step-1"]
    assert read_events(job_dir.events_path)[-1]["message"].startswith("Stopped after step 1/6")
    assert run_job(job_dir) == EXIT_OK
    assert _metric_steps(read_events(job_dir.events_path)) == [1, 2, 3, 4, 5, 6]
    # Started again after success, it does nothing.
    count = len(read_events(job_dir.events_path))
    assert run_job(job_dir) == EXIT_OK and len(read_events(job_dir.events_path)) == count


def test_a_retry_after_failure_clears_the_old_error(tmp_path, tiny_llama):
    job_dir = _job(tmp_path, tiny_llama, rows=2, epochs=1, base_model=tmp_path / "missing")
    assert run_job(job_dir) == EXIT_FAILED
    spec = job_dir.read_spec()
    job_dir.write_spec(spec.model_copy(update={"base_model": str(tiny_llama)}))
    assert run_job(job_dir) == EXIT_OK
    assert not job_dir.error_path.exists() and job_dir.result_path.exists()
