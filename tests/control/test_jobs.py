"""The job supervisor with real job processes: a tiny random Llama trained to succeeded (through a crash),
cancel, a failing job that registers nothing, bounded restarts, adoption after a restart of the supervisor.

Processes other than the real worker are one-line Python programs that crash or sleep: they stand
for a job process that dies or hangs, which the real one cannot be made to do on cue.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import openai
import pytest

from slipway.app import base_model_folder
from slipway.backends import processes
from slipway.control import create_control_app
from slipway.control.jobs import PROCESS_FILE, JobsConfig, JobSupervisor
from slipway.control.learning import LearningServices, cancel_job, create_job
from slipway.spec.fine_tuning import FineTuningJobCreate
from slipway.train.catalog import DatasetCatalog
from tests.control.routes.learning import ServerThread, chat_row, jsonl, llm_package

CRASH = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
HANG = [sys.executable, "-c", "import time; time.sleep(120)"]
FAST = JobsConfig(restart_delay=0, stop_timeout=20, device="cpu", num_threads=1)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    from tests.train.conftest import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def catalog(store, home) -> DatasetCatalog:
    return DatasetCatalog(store, home)


def _deploy(plane, workspace, name: str, weights: Path) -> None:
    plane.deploy(workspace.id, llm_package(name, weights), promote=True)


def _job(plane, workspace, catalog, *, model="tiny", rows=8, suffix=None, **hyperparameters):
    dataset, _ = catalog.from_jsonl(workspace.id, jsonl([chat_row(i) for i in range(rows)]), name="arith",
                                    validation_fraction=0.2)
    request = FineTuningJobCreate(model=model, training_file=dataset.id, suffix=suffix, seed=1,
                                  hyperparameters={"lora_rank": 4, **hyperparameters})
    return create_job(plane.store, workspace.id, request, time.time())


async def _tick_until(supervisor, store, workspace, job_id, done, *, timeout=240.0, between=None):
    deadline = time.monotonic() + timeout
    while True:
        await supervisor.tick(time.time())
        job = store.fine_tuning.get_job(workspace.id, job_id)
        if done(job):
            return job
        if between is not None:
            between(job)
        assert time.monotonic() < deadline, f"job still {job.status} after {timeout}s: {job.error}"
        await asyncio.sleep(0.02)


def _process(job) -> dict:
    return json.loads((Path(job.job_dir) / PROCESS_FILE).read_text())


@pytest.mark.slow
async def test_a_job_trains_through_a_crash_to_succeeded_and_registers_its_model(plane, workspace, catalog, tiny_llama,
                                                                                 home):
    _deploy(plane, workspace, "tiny", tiny_llama)
    dataset, _ = catalog.from_jsonl(workspace.id, jsonl([chat_row(i) for i in range(60)]), name="arith",
                                    validation_fraction=0.1)
    supervisor = JobSupervisor(plane.store, home, base_model_folder=base_model_folder, config=FAST,
                               on_model_registered=plane.publish)
    learning = LearningServices(datasets=catalog, wake_jobs=supervisor.wake)
    with ServerThread(create_control_app(plane, learning=learning)) as server:
        client = openai.OpenAI(base_url=f"{server.url}/api/v1", api_key=(home / "admin.key").read_text().strip(),
                               max_retries=0)
        job = client.fine_tuning.jobs.create(model="tiny", training_file=dataset.id, suffix="arith", seed=1,
                                             hyperparameters={"n_epochs": 2, "batch_size": 1,
                                                              "checkpoint_every_steps": 10, "lora_rank": 4})
        killed: list[int] = []

        def kill_after_the_first_checkpoint(row) -> None:
            if not killed and row.status == "running" and (Path(row.job_dir) / "checkpoints" / "step-10").is_dir():
                pid = _process(row)["pid"]
                os.killpg(pid, signal.SIGKILL)
                killed.append(pid)

        try:
            final = await _tick_until(supervisor, plane.store, workspace, job.id, lambda j: j.finished,
                                      between=kill_after_the_first_checkpoint)
        finally:
            await supervisor.shutdown()

        assert killed, "the job finished before it could be killed"
        assert final.status == "succeeded", final.error
        retrieved = client.fine_tuning.jobs.retrieve(job.id)
        assert retrieved.status == "succeeded" and retrieved.fine_tuned_model == "tiny:ft-arith"
        assert retrieved.trained_tokens > 0 and retrieved.finished_at >= retrieved.created_at
        assert retrieved.hyperparameters.n_epochs == 2 and retrieved.hyperparameters.learning_rate_multiplier == 1.0

        events = list(client.fine_tuning.jobs.list_events(job.id, limit=500))
        messages = [e.message for e in reversed(events)]
        assert messages[0] == f"Validating training file: {dataset.id}"
        assert "Files validated, moving job to queued state" in messages
        assert any(m.startswith("The job process killed by SIGKILL before finishing") for m in messages)
        assert any(m.startswith("Resumed from the checkpoint at step") for m in messages)
        assert messages[-1] == "New fine-tuned model registered: tiny:ft-arith"
        total = 2 * dataset.train_rows  # 2 epochs of batch 1
        assert {e.data["step"] for e in events if e.type == "metrics"} == set(range(1, total + 1))
        registered = events[0].data
        assert registered["adapter_path"] == str(home / "fine_tuning" / job.id / "adapter")
        assert registered["base_model"] == "tiny" and registered["dataset_content_hash"]
        assert (Path(registered["adapter_path"]) / "adapter_model.safetensors").is_file()

        checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
        kept = sorted({*range(10, total + 1, 10), total}, reverse=True)[:3]  # every 10 steps and the last
        assert [c.step_number for c in checkpoints] == kept
        assert checkpoints[0].fine_tuned_model_checkpoint == f"tiny:ft-arith:ckpt-step-{total}"
        assert checkpoints[0].metrics.train_loss is not None and checkpoints[0].metrics.valid_loss is not None

        names = [m.name for m in plane.store.models.list(workspace.id)]
        assert "tiny:ft-arith" in names
        assert any(m.name == "tiny:ft-arith" for m in plane.snapshots.current().models)
        assert _process(final)["restarts"] == 1


@pytest.mark.slow
async def test_cancel_stops_the_process_after_a_checkpoint_and_registers_nothing(plane, workspace, catalog,
                                                                                 tiny_llama, home):
    _deploy(plane, workspace, "tiny", tiny_llama)
    job = _job(plane, workspace, catalog, rows=100, n_epochs=5, batch_size=1)
    supervisor = JobSupervisor(plane.store, home, base_model_folder=base_model_folder, config=FAST)
    try:
        running = await _tick_until(supervisor, plane.store, workspace, job.id,
                                    lambda j: j.status == "running" and plane.store.fine_tuning.list_checkpoints(
                                        workspace.id, j.id) == [] and _has_metrics(plane, workspace, j))
        pid = running.pid
        assert cancel_job(plane.store, workspace.id, job.id, time.time()).status == "cancelled"
        deadline = time.monotonic() + 60
        while job.id in supervisor._workers:
            await supervisor.tick(time.time())
            assert time.monotonic() < deadline, "the cancelled job's process did not stop"
            await asyncio.sleep(0.05)
    finally:
        await supervisor.shutdown()
    final = plane.store.fine_tuning.get_job(workspace.id, job.id)
    assert final.status == "cancelled" and final.fine_tuned_model is None
    assert not processes.is_running(pid, _process(running)["start_ticks"])
    messages = [e.message for e in plane.store.fine_tuning.events_since(workspace.id, job.id)]
    assert any(m.startswith("Stopped after step") for m in messages)  # SIGTERM saved a checkpoint first
    assert messages[-1] == "The job was cancelled; its process has stopped"
    assert plane.store.fine_tuning.list_checkpoints(workspace.id, job.id)
    assert [m.name for m in plane.store.models.list(workspace.id)] == ["tiny"]


def _has_metrics(plane, workspace, job) -> bool:
    return any(e.type == "metrics" for e in plane.store.fine_tuning.events_since(workspace.id, job.id))


async def test_a_failing_job_reports_the_workers_error_and_registers_no_model(plane, workspace, catalog, tmp_path,
                                                                             home):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    _deploy(plane, workspace, "broken", empty)
    job = _job(plane, workspace, catalog, model="broken", suffix="x")
    supervisor = JobSupervisor(plane.store, home, base_model_folder=base_model_folder, config=FAST)
    try:
        final = await _tick_until(supervisor, plane.store, workspace, job.id, lambda j: j.finished, timeout=60)
    finally:
        await supervisor.shutdown()
    assert final.status == "failed" and final.fine_tuned_model is None
    assert final.error["code"] == "invalid_base_model" and final.error["param"] == "model"
    assert "has no config.json" in final.error["message"]
    assert [m.name for m in plane.store.models.list(workspace.id)] == ["broken"]
    levels = [e.level for e in plane.store.fine_tuning.events_since(workspace.id, job.id)]
    assert levels[-1] == "error"


async def test_a_process_that_keeps_dying_is_restarted_a_bounded_number_of_times(plane, workspace, catalog, tmp_path,
                                                                                 home):
    _deploy(plane, workspace, "tiny", tmp_path)
    job = _job(plane, workspace, catalog)
    supervisor = JobSupervisor(plane.store, home, base_model_folder=base_model_folder, command=CRASH,
                               config=JobsConfig(max_restarts=2, restart_delay=0))
    final = await _tick_until(supervisor, plane.store, workspace, job.id, lambda j: j.finished, timeout=60)
    assert final.status == "failed" and final.error["code"] == "job_crashed"
    assert "3 times (last: killed by SIGKILL)" in final.error["message"]
    messages = [e.message for e in plane.store.fine_tuning.events_since(workspace.id, job.id)]
    assert sum("starting it again" in m for m in messages) == 2
    assert [m.name for m in plane.store.models.list(workspace.id)] == ["tiny"]


async def test_after_a_restart_a_live_process_is_adopted_and_a_gone_one_started_again(plane, workspace, catalog,
                                                                                       tmp_path, home):
    _deploy(plane, workspace, "tiny", tmp_path)
    job = _job(plane, workspace, catalog)
    first = JobSupervisor(plane.store, home, base_model_folder=base_model_folder, command=HANG, config=FAST)
    running = await _tick_until(first, plane.store, workspace, job.id, lambda j: j.status == "running", timeout=30)
    original = _process(running)
    assert processes.is_running(original["pid"], original["start_ticks"])

    second = JobSupervisor(plane.store, home, base_model_folder=base_model_folder, command=HANG, config=FAST)
    await second.start()
    await second.tick(time.time())
    assert _process(running)["pid"] == original["pid"]  # adopted, not started twice

    await first.shutdown()  # SIGTERM: the process is gone; the job stays running in the store
    assert not processes.is_running(original["pid"], original["start_ticks"])
    assert plane.store.fine_tuning.get_job(workspace.id, job.id).status == "running"

    third = JobSupervisor(plane.store, home, base_model_folder=base_model_folder, command=HANG, config=FAST)
    await third.start()
    await third.tick(time.time())
    restarted = _process(running)
    try:
        assert restarted["pid"] != original["pid"] and restarted["restarts"] == 0
        assert processes.is_running(restarted["pid"], restarted["start_ticks"])
        assert plane.store.fine_tuning.get_job(workspace.id, job.id).pid == restarted["pid"]
    finally:
        await third.shutdown()


async def test_a_dataset_gone_before_the_start_fails_the_job_with_its_param(plane, workspace, catalog, tmp_path, home):
    _deploy(plane, workspace, "tiny", tmp_path)
    job = _job(plane, workspace, catalog)
    catalog.delete(workspace.id, job.training_file)
    supervisor = JobSupervisor(plane.store, home, base_model_folder=base_model_folder, command=HANG, config=FAST)
    await supervisor.tick(time.time())
    final = plane.store.fine_tuning.get_job(workspace.id, job.id)
    assert final.status == "failed" and final.error["param"] == "training_file"
    assert "was deleted before the job started" in final.error["message"]
    assert not supervisor._workers


async def test_queued_jobs_wait_for_a_free_slot(plane, workspace, catalog, tmp_path, home):
    _deploy(plane, workspace, "tiny", tmp_path)
    jobs = [_job(plane, workspace, catalog) for _ in range(2)]
    supervisor = JobSupervisor(plane.store, home, base_model_folder=base_model_folder, command=HANG, config=FAST)
    try:
        await supervisor.tick(time.time())
        statuses = [plane.store.fine_tuning.get_job(workspace.id, j.id).status for j in jobs]
        assert statuses == ["running", "queued"]
    finally:
        await supervisor.shutdown()
