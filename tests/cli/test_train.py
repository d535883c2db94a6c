"""`slipway train`, `slipway jobs` and `slipway datasets` against a real control app and job supervisor.

The CLI runs as a subprocess (`python -m slipway ...`) against the management API served by
uvicorn on 127.0.0.1, while the job supervisor ticks in the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path

import pytest

from slipway.app import base_model_folder
from slipway.control import ControlPlane, create_control_app
from slipway.control.jobs import JobsConfig, JobSupervisor
from slipway.control.learning import LearningServices
from slipway.store import Store
from slipway.train.catalog import DatasetCatalog
from tests.control.conftest import LogBackend, ScriptedReconciler
from tests.control.routes.learning import ServerThread, chat_row, jsonl, llm_package

HANG = [sys.executable, "-c", "import time; time.sleep(120)"]


class World:
    """A control plane with an llm model `tiny`, served over HTTP, and its job supervisor."""

    def __init__(self, home: Path, weights: Path, command: list[str] | None = None) -> None:
        self.home = home
        self.store = Store.open(None, home)
        self.plane = ControlPlane(self.store, LogBackend(), home=home, reconciler=ScriptedReconciler())
        self.workspace, self.admin_key = self.plane.bootstrap()
        self.plane.deploy(self.workspace.id, llm_package("tiny", weights), promote=True)
        self.supervisor = JobSupervisor(self.store, home, base_model_folder=base_model_folder, command=command,
                                        config=JobsConfig(device="cpu", num_threads=1, tick_interval=0.2))
        learning = LearningServices(datasets=DatasetCatalog(self.store, home), wake_jobs=self.supervisor.wake)
        self.server = ServerThread(create_control_app(self.plane, learning=learning))

    async def cli(self, *args: str, timeout: float = 240) -> tuple[int, str, str]:
        env = {**os.environ, "SLIPWAY_URL": self.server.url, "SLIPWAY_API_KEY": self.admin_key,
               "SLIPWAY_HOME": str(self.home), "COLUMNS": "200"}
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "slipway", *args, env=env,
                                                       stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
        return process.returncode, stdout.decode(), stderr.decode()


@contextlib.asynccontextmanager
async def running(world: World):
    """The server in its thread and the supervisor's loop as a task, stopped afterwards."""
    with world.server:
        task = asyncio.create_task(world.supervisor.run_forever())
        try:
            yield world
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await world.supervisor.shutdown()
            world.store.close()


def _one_error_line(code: int, stderr: str) -> str:
    assert code == 1, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:"), stderr
    return stderr


@pytest.mark.slow
async def test_train_uploads_the_file_follows_progress_and_prints_the_model(tmp_path):
    from tests.train.conftest import save_tiny_llama

    weights = save_tiny_llama(tmp_path / "tiny-llama")
    data = tmp_path / "arith.jsonl"
    data.write_bytes(jsonl([chat_row(i) for i in range(12)]))
    async with running(World(tmp_path / "home", weights)) as world:
        code, out, err = await world.cli("train", "--model", "tiny", "--dataset", str(data), "--epochs", "2",
                                         "--batch-size", "2", "--lora-rank", "4", "--suffix", "cli", "--seed", "3")
        assert code == 0, err + out
        assert "Dataset ds-" in out and "Fine-tuning job ftjob-" in out
        assert "Fine-tuning started" in out and "Checkpoint created at step" in out
        assert "Succeeded: fine-tuned model tiny:ft-cli" in out
        [job] = world.store.fine_tuning.list_jobs(world.workspace.id)
        assert job.status == "succeeded" and job.hyperparameters["n_epochs"] == 2
        total = job.hyperparameters["n_epochs"] * -(-world.store.datasets.get(world.workspace.id, job.training_file)
                                                    .train_rows // 2)
        assert f"{total}/{total}" in out  # the progress bar's step/total at the end

        code, out, err = await world.cli("jobs", "ls")
        assert code == 0 and job.id in out and "tiny:ft-cli" in out and "succeeded" in out


async def test_datasets_and_jobs_commands(tmp_path):
    data = tmp_path / "support.jsonl"
    data.write_bytes(jsonl([chat_row(i) for i in range(4)]))
    async with running(World(tmp_path / "home", tmp_path, command=HANG)) as world:
        code, out, err = await world.cli("datasets", "create", str(data), "--validation-fraction", "0")
        assert code == 0, err
        dataset_id = out.split("Dataset ")[1].split()[0]
        code, out, _ = await world.cli("datasets", "ls")
        assert code == 0 and dataset_id in out and "support" in out and "upload" in out

        code, out, err = await world.cli("train", "--model", "tiny", "--dataset", dataset_id, "--no-follow")
        assert code == 0, err
        job_id = out.split("Fine-tuning job ")[1].split()[0]
        code, out, err = await world.cli("jobs", "cancel", job_id)
        assert code == 0 and f"Cancelled {job_id}" in out, err
        code, out, err = await world.cli("jobs", "follow", job_id)
        assert f"fine-tuning job {job_id} was cancelled" in _one_error_line(code, err)
        code, out, err = await world.cli("datasets", "rm", dataset_id)
        assert code == 0 and f"Deleted {dataset_id}" in out, err


async def test_train_errors_are_one_clear_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(chat_row(1)) + "\n{oops\n")
    async with running(World(tmp_path / "home", tmp_path, command=HANG)) as world:
        code, _, err = await world.cli("train", "--model", "gpt-4o", "--dataset", "ds-123")
        assert "model 'gpt-4o' is not a base model" in _one_error_line(code, err) and "tiny" in err
        code, _, err = await world.cli("train", "--model", "tiny", "--dataset", "no-such-thing")
        assert "neither a file nor a dataset id" in _one_error_line(code, err)
        code, _, err = await world.cli("train", "--model", "tiny", "--dataset", str(bad))
        assert "line 2: invalid JSON" in _one_error_line(code, err)
        code, _, err = await world.cli("jobs", "cancel", "ftjob-missing")
        assert "not found" in _one_error_line(code, err)


async def test_a_failed_job_ends_the_follow_with_its_reason(tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    data = tmp_path / "d.jsonl"
    data.write_bytes(jsonl([chat_row(1), chat_row(2)]))
    async with running(World(tmp_path / "home", empty)) as world:
        code, out, err = await world.cli("train", "--model", "tiny", "--dataset", str(data), timeout=120)
        assert "failed: unknown base model" in _one_error_line(code, err) and "has no config.json" in err
        assert "Fine-tuning failed" in out  # the error event, shown while following
        assert [m.name for m in world.store.models.list(world.workspace.id)] == ["tiny"]
