"""Fine-tuning jobs as processes: start them, copy their progress into the store, finish them.

    JobSupervisor.tick(now), about every second and whenever the API wakes it:
      validating_files ─► datasets and base model checked, DIR/job.json written ─────────► queued
      queued           ─► `python -m slipway.train.worker --job-dir DIR`, at most
                          `max_concurrent_jobs` at once ────────────────────────────────► running
      running          ─► new events.jsonl lines and checkpoints/step-N folders copied into the store
      process exited   ─► result.json: the fine-tuned model registered ──────────────────► succeeded
                          error.json (or exit code 1) ───────────────────────────────────► failed
                          anything else (exit 75, a crash, a kill): started again and it
                          resumes from its newest checkpoint; the `max_restarts`+1-th such exit ► failed
      cancelled        ─► (by the API) its process gets SIGTERM, saves a checkpoint and exits;
                          SIGKILL if it is still there after `stop_timeout`

A job's folder is $SLIPWAY_HOME/fine_tuning/<job id>/ (layout in `slipway.train.job`) plus the
supervisor's own `process.json` (pid, process start time, restarts so far) and `worker.log` (the
process's output); `slipway.control.job_folder` reads and writes it. After a restart of
`slipway up` a running job whose process still runs is adopted and watched through /proc; one
whose process is gone is started again (not counted as a restart) and resumes from its
checkpoint. Stopping `slipway up` stops every job process the same way (SIGTERM, checkpoint) and
leaves the jobs running in the store, so the next start resumes them.
Like the local backend, one supervisor manages a home at a time.

A succeeded job registers a model `<base>:ft-<suffix or job id>` (`fine_tuned_model_name`) in the
job's workspace. What serving the adapter needs is recorded with the job: `job.model` (the base
model's name), `fine_tuned_model`, and `<job_dir>/adapter/` (a PEFT adapter with lineage.json: base
model path and fingerprint, dataset hashes, hyperparameters, metrics); the last event of the job
("New fine-tuned model registered ...") carries the same as data.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

from slipway.backends import processes
from slipway.control.job_folder import (
    PROCESS_FILE,
    WORKER_LOG,
    append_event,
    checkpoint_names,
    checkpoint_records,
    concatenate,
    log_tail,
    read_events,
    read_json,
    write_json_atomic,
)
from slipway.control.learning import base_deployment
from slipway.errors import SlipwayError
from slipway.spec.fine_tuning import (
    ADAPTER_DIR,
    CHECKPOINTS_DIR,
    ERROR_FILE,
    EVENTS_FILE,
    JOB_EXIT_FAILED,
    LINEAGE_FILE,
    RESULT_FILE,
    SPEC_FILE,
    Hyperparameters,
    JobSpec,
    fine_tuned_model_name,
)
from slipway.store import DeploymentRow, FineTuningJobRow, Store

log = logging.getLogger(__name__)

JOBS_DIR = "fine_tuning"
WORKER_MODULE = "slipway.train.worker"
# Most bytes of events.jsonl copied per job and tick; a long file is caught up over several ticks.
_MAX_EVENT_BYTES_PER_TICK = 4 * 1024 * 1024
_MAX_RESTART_DELAY = 300.0


class JobsConfig(BaseModel):
    """How fine-tuning jobs run on this machine; the defaults suit `slipway up` on one machine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_concurrent_jobs: int = Field(1, ge=1, le=64, description="Job processes running at once; the rest "
                                                                "wait as queued, oldest first.")
    tick_interval: float = Field(1.0, gt=0, description="Seconds between supervision ticks (creating or "
                                                        "cancelling a job wakes it early).")
    max_restarts: int = Field(3, ge=0, description="Times a job process that stopped without an outcome "
                                                   "(crash, kill, exit 75) is started again before the job fails.")
    restart_delay: float = Field(1.0, ge=0, description="Seconds before the first restart; doubles with each "
                                                        "restart of the same job.")
    stop_timeout: float = Field(30.0, gt=0, description="Seconds a job process gets after SIGTERM to save a "
                                                        "checkpoint and exit before it is killed.")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="Where jobs train: cpu, cuda, or auto "
                                                                       "(cuda when present).")
    num_threads: int | None = Field(None, ge=1, description="CPU threads per job; default: torch's choice.")


BaseModelFolder = Callable[[DeploymentRow], Path]
"""Turns a base model's llm deployment into a Hugging Face folder (may convert a GGUF: slow, blocking)."""


class JobProblem(SlipwayError):
    """The job cannot start; becomes the job's OpenAI error {"code", "message", "param"}."""

    def __init__(self, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message, code=code)
        self.param = param

    def as_openai(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param}


@dataclass
class _Worker:
    """A job process this supervisor watches: spawned here (`popen`) or adopted (`popen` None)."""

    job: FineTuningJobRow
    job_dir: Path
    pid: int
    start_ticks: int
    popen: subprocess.Popen | None
    exited: bool = False
    exit_code: int | None = None
    stop_sent_at: float | None = None
    killed: bool = False

    @property
    def job_id(self) -> str:
        return self.job.id


@dataclass
class _Progress:
    """How far a job's folder has been copied into the store."""

    events_offset: int = 0
    last_seq: int | None = None
    checkpoint_names: tuple[str, ...] = ()
    hyperparameters_resolved: bool = False


@dataclass
class _Restart:
    not_before: float = 0.0


class JobSupervisor:
    """Runs the fine-tuning jobs of every workspace as local processes; see the module docstring."""

    def __init__(self, store: Store, home: Path, *, base_model_folder: BaseModelFolder,
                 config: JobsConfig | None = None, python: str = sys.executable,
                 command: list[str] | None = None, on_model_registered: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.root = Path(home) / JOBS_DIR
        self.config = config or JobsConfig()
        self.command = command or [python, "-m", WORKER_MODULE]
        self._base_model_folder = base_model_folder
        self._on_model_registered = on_model_registered
        self._clock = clock
        self._workers: dict[str, _Worker] = {}
        self._progress: dict[str, _Progress] = {}
        self._restarts: dict[str, _Restart] = {}
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._last_error: str | None = None

    def job_dir(self, job_id: str) -> Path:
        return self.root / job_id

    # Lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Adopt the job processes an earlier control plane left running."""
        await asyncio.to_thread(self._adopt)
        self._started = True

    async def run_forever(self) -> None:
        """Tick every `tick_interval` seconds (or sooner when woken) until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            try:
                if not self._started:
                    await self.start()
                await self.tick(self._clock())
                self._last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                if message != self._last_error:
                    log.exception("job supervision tick failed; retrying")
                self._last_error = message
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.config.tick_interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    def wake(self) -> None:
        """Tick now instead of at the end of the interval; safe from any thread."""
        if self._loop is not None and self._wake is not None:
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop has closed
                pass

    async def shutdown(self) -> None:
        """Stop every job process (SIGTERM: each saves a checkpoint); the jobs resume at the next start."""
        now = self._clock()
        for worker in self._workers.values():
            self._stop(worker, now)
        deadline = time.monotonic() + self.config.stop_timeout
        while any(not self._exited(w) for w in self._workers.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for worker in self._workers.values():
            if not self._exited(worker):
                log.warning("job process did not stop in time; killing it", extra={"job_id": worker.job_id})
                self._signal(worker, signal.SIGKILL)
        for worker in list(self._workers.values()):
            await asyncio.to_thread(self._copy_progress, worker.job_id, worker.job_dir)
        self._workers.clear()

    # The tick ----------------------------------------------------------------------------
    async def tick(self, now: float) -> None:
        unfinished = {j.id: j for j in await asyncio.to_thread(self.store.fine_tuning.list_unfinished)}
        for worker in list(self._workers.values()):
            await self._watch(worker, unfinished.get(worker.job_id), now)
        for job in unfinished.values():
            if job.status == "validating_files":
                await asyncio.to_thread(self._prepare, job, now)
        await self._start_due(now)
        for job_id in [j for j in self._progress if j not in unfinished and j not in self._workers]:
            del self._progress[job_id]  # finished: nothing more to copy
            self._restarts.pop(job_id, None)

    async def _watch(self, worker: _Worker, job: FineTuningJobRow | None, now: float) -> None:
        """Copy the worker's progress; act on its exit, or on its job having been cancelled."""
        exited = self._exited(worker)
        await asyncio.to_thread(self._copy_progress, worker.job_id, worker.job_dir)
        if job is None:  # finished in the store while its process runs: cancelled
            if not exited:
                self._stop(worker, now)
                return
            del self._workers[worker.job_id]
            await asyncio.to_thread(self._after_cancel, worker)
            return
        if exited:
            del self._workers[worker.job_id]
            await asyncio.to_thread(self._finish, job, worker, now)

    async def _start_due(self, now: float) -> None:
        """Start jobs while there is room: running jobs without a process first, then queued, oldest first."""
        jobs = await asyncio.to_thread(self.store.fine_tuning.list_unfinished)
        waiting = [j for j in jobs if j.status == "running" and j.id not in self._workers]
        waiting += [j for j in jobs if j.status == "queued"]
        for job in waiting:
            if len(self._workers) >= self.config.max_concurrent_jobs:
                return
            restart = self._restarts.get(job.id)
            if restart is not None and now < restart.not_before:
                continue
            await asyncio.to_thread(self._launch, job, now)

    # validating_files -> queued -----------------------------------------------------------
    def _prepare(self, job: FineTuningJobRow, now: float) -> None:
        job_dir = self.job_dir(job.id)
        job_dir.mkdir(parents=True, exist_ok=True)
        self._append_event(job.id, job_dir, f"Validating training file: {job.training_file}")
        try:
            spec = self._job_spec(job, job_dir)
        except JobProblem as problem:
            self._fail(job, job_dir, problem.as_openai(), now, expected=("validating_files",))
            return
        write_json_atomic(job_dir / SPEC_FILE, spec.model_dump(mode="json"))
        self.store.fine_tuning.update_job(job.id, job_dir=str(job_dir))
        if self.store.fine_tuning.transition(job.id, "queued", now, expected=("validating_files",)) is not None:
            self._append_event(job.id, job_dir, "Files validated, moving job to queued state")

    def _job_spec(self, job: FineTuningJobRow, job_dir: Path) -> JobSpec:
        training = self.store.datasets.get(job.workspace_id, job.training_file)
        if training is None:
            raise JobProblem(f"training_file {job.training_file} was deleted before the job started; upload it "
                             "again and create a new job", code="invalid_training_file", param="training_file")
        validation_path: Path | None = None
        if job.validation_file is not None:
            validation = self.store.datasets.get(job.workspace_id, job.validation_file)
            if validation is None:
                raise JobProblem(f"validation_file {job.validation_file} was deleted before the job started",
                                 code="invalid_validation_file", param="validation_file")
            # A dataset given as validation_file is held out whole: both of its files.
            validation_path = job_dir / "validation.jsonl"
            concatenate([Path(validation.path) / "train.jsonl", Path(validation.path) / "validation.jsonl"],
                         validation_path)
        elif training.validation_rows > 0:
            validation_path = Path(training.path) / "validation.jsonl"
        deployment = base_deployment(self.store, job.workspace_id, job.model)
        if deployment is None:
            raise JobProblem(f"model {job.model!r} has no llm deployment to train from any more; deploy it again "
                             "and create a new job", code="invalid_base_model", param="model")
        try:
            base_folder = self._base_model_folder(deployment)
        except (SlipwayError, OSError) as exc:
            message = exc.message if isinstance(exc, SlipwayError) else str(exc)
            raise JobProblem(f"the weights of {job.model!r} (deployment {deployment.id}) cannot be used for "
                             f"training: {message}", code="invalid_base_model", param="model") from None
        return JobSpec(job_id=job.id, base_model=str(base_folder), base_model_name=job.model,
                       training_file=str(Path(training.path) / "train.jsonl"),
                       validation_file=str(validation_path) if validation_path else None,
                       hyperparameters=Hyperparameters.model_validate(job.hyperparameters), seed=job.seed,
                       device=self.config.device, num_threads=self.config.num_threads)

    # queued -> running --------------------------------------------------------------------
    def _launch(self, job: FineTuningJobRow, now: float) -> None:
        job_dir = Path(job.job_dir or self.job_dir(job.id))
        if not (job_dir / SPEC_FILE).is_file():
            self._fail(job, job_dir, {"code": "internal_error", "param": None,
                                      "message": f"{job_dir / SPEC_FILE} is missing; create the job again"}, now)
            return
        record = read_json(job_dir / PROCESS_FILE) or {}
        argv = [*self.command, "--job-dir", str(job_dir)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            with open(job_dir / WORKER_LOG, "ab") as output:
                output.write(f"--- slipway: starting job {job.id} at "
                             f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now))}\n".encode())
                output.flush()
                popen = subprocess.Popen(argv, cwd=job_dir, env=env, stdin=subprocess.DEVNULL, stdout=output,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            self._fail(job, job_dir, {"code": "internal_error", "param": None,
                                      "message": f"cannot start the job process ({argv[0]}): {exc}"}, now)
            return
        ticks = processes.start_ticks(popen.pid)
        worker = _Worker(job=job, job_dir=job_dir, pid=popen.pid, start_ticks=ticks if ticks is not None else -1,
                         popen=popen)
        self._workers[job.id] = worker
        write_json_atomic(job_dir / PROCESS_FILE, {"pid": popen.pid, "start_ticks": worker.start_ticks,
                                                    "started_at": now, "restarts": record.get("restarts", 0)})
        if job.status == "queued":
            if self.store.fine_tuning.transition(job.id, "running", now, expected=("queued",), pid=popen.pid) is None:
                # Cancelled between the listing and now: the next tick stops the process.
                log.info("job was cancelled as it started", extra={"job_id": job.id})
        else:
            self.store.fine_tuning.update_job(job.id, pid=popen.pid)
        log.info("job process started", extra={"job_id": job.id, "pid": popen.pid})

    # running -> succeeded | failed | running again ----------------------------------------
    def _finish(self, job: FineTuningJobRow, worker: _Worker, now: float) -> None:
        job_dir = worker.job_dir
        self._restarts.pop(job.id, None)
        if (job_dir / RESULT_FILE).is_file():
            self._succeed(job, job_dir, now)
            return
        error = read_json(job_dir / ERROR_FILE)
        if isinstance(error, dict) and error.get("message"):
            self._fail(job, job_dir, {"code": str(error.get("code") or "job_failed"), "param": error.get("param"),
                                      "message": str(error["message"])}, now, event=False)
            return
        how = processes.describe_exit(worker.exit_code)
        if worker.exit_code == JOB_EXIT_FAILED:
            self._fail(job, job_dir, {"code": "internal_error", "param": None,
                                      "message": f"the job process {how} without saying why; the end of "
                                                 f"{job_dir / WORKER_LOG}: {log_tail(job_dir)}"}, now)
            return
        record = read_json(job_dir / PROCESS_FILE) or {}
        restarts = int(record.get("restarts", 0)) + 1
        if restarts > self.config.max_restarts:
            self._fail(job, job_dir, {"code": "job_crashed", "param": None,
                                      "message": f"the job process stopped without finishing {restarts} times "
                                                 f"(last: {how}); the end of {job_dir / WORKER_LOG}: "
                                                 f"{log_tail(job_dir)}"}, now)
            return
        write_json_atomic(job_dir / PROCESS_FILE, {**record, "restarts": restarts})
        delay = min(self.config.restart_delay * 2 ** (restarts - 1), _MAX_RESTART_DELAY)
        self._restarts[job.id] = _Restart(not_before=now + delay)
        self._append_event(job.id, job_dir, f"The job process {how} before finishing; starting it again in "
                                         f"{delay:.0f}s (restart {restarts} of {self.config.max_restarts}), it "
                                         "resumes from its newest checkpoint", level="warn")

    def _succeed(self, job: FineTuningJobRow, job_dir: Path, now: float) -> None:
        result = read_json(job_dir / RESULT_FILE) or {}
        lineage = read_json(job_dir / ADAPTER_DIR / LINEAGE_FILE) or {}
        name = fine_tuned_model_name(job.model, job.id, job.suffix)
        if self.store.models.get(job.workspace_id, name) is not None:
            name = fine_tuned_model_name(job.model, job.id)
        with self.store.transaction() as tx:
            finished = tx.fine_tuning.transition(job.id, "succeeded", now, expected=("running",),
                                                 fine_tuned_model=name,
                                                 trained_tokens=result.get("trained_tokens"))
            if finished is None:  # cancelled as it finished: the cancel stands and nothing is registered
                return
            tx.models.ensure(job.workspace_id, name, now)
            tx.state.bump()
        dataset = lineage.get("dataset") or {}
        self._append_event(job.id, job_dir, f"New fine-tuned model registered: {name}", data={
            "fine_tuned_model": name, "base_model": job.model, "adapter_path": str(job_dir / ADAPTER_DIR),
            "base_model_path": (lineage.get("base_model") or {}).get("path"),
            "dataset_content_hash": dataset.get("content_hash"), "hyperparameters": lineage.get("hyperparameters"),
            "metrics": result.get("metrics"), "trained_tokens": result.get("trained_tokens")})
        log.info("fine-tuning job succeeded", extra={"job_id": job.id, "fine_tuned_model": name})
        try:
            self._on_model_registered()
        except Exception:  # the model is committed; the control loop publishes it later
            log.exception("announcing the fine-tuned model failed")

    def _fail(self, job: FineTuningJobRow, job_dir: Path, error: dict[str, Any], now: float, *,
              expected: tuple[str, ...] = ("validating_files", "queued", "running"), event: bool = True) -> None:
        failed = self.store.fine_tuning.transition(job.id, "failed", now, expected=expected, error=error)
        if failed is not None and event:
            self._append_event(job.id, job_dir, f"Fine-tuning failed: {error['message']}", level="error",
                               data={"error": error})
        log.warning("fine-tuning job failed", extra={"job_id": job.id, "code": error.get("code")})

    def _after_cancel(self, worker: _Worker) -> None:
        self._append_event(worker.job_id, worker.job_dir, "The job was cancelled; its process has stopped")

    # Processes ---------------------------------------------------------------------------
    def _adopt(self) -> None:
        for job in self.store.fine_tuning.list_unfinished():
            if job.status != "running" or not job.job_dir or job.id in self._workers:
                continue
            record = read_json(Path(job.job_dir) / PROCESS_FILE) or {}
            pid, ticks = record.get("pid"), record.get("start_ticks")
            if isinstance(pid, int) and isinstance(ticks, int) and processes.is_running(pid, ticks):
                self._workers[job.id] = _Worker(job=job, job_dir=Path(job.job_dir), pid=pid,
                                                start_ticks=ticks, popen=None)
                log.info("adopted a running job process", extra={"job_id": job.id, "pid": pid})

    def _exited(self, worker: _Worker) -> bool:
        if worker.exited:
            return True
        if worker.popen is not None:
            code = worker.popen.poll()
            if code is None:
                return False
            worker.exit_code = code
        elif processes.is_running(worker.pid, worker.start_ticks):
            return False
        worker.exited = True
        return True

    def _stop(self, worker: _Worker, now: float) -> None:
        """SIGTERM once (the worker saves a checkpoint and exits 75); SIGKILL after `stop_timeout`."""
        if self._exited(worker):
            return
        if worker.stop_sent_at is None:
            worker.stop_sent_at = now
            self._signal(worker, signal.SIGTERM)
        elif not worker.killed and now - worker.stop_sent_at > self.config.stop_timeout:
            worker.killed = True
            log.warning("job process ignored SIGTERM; killing it", extra={"job_id": worker.job_id})
            self._signal(worker, signal.SIGKILL)

    @staticmethod
    def _signal(worker: _Worker, sig: signal.Signals) -> None:
        # The process leads its own group (start_new_session); signal the group, if it is still ours.
        if worker.popen is not None or processes.holds_pid(worker.pid, worker.start_ticks):
            processes.signal_group(worker.pid, sig)

    # Copying the folder into the store ----------------------------------------------------
    def _copy_progress(self, job_id: str, job_dir: Path) -> None:
        progress = self._progress.setdefault(job_id, _Progress())
        if progress.last_seq is None:
            progress.last_seq = self.store.fine_tuning.last_event_seq(job_id)
        self._copy_events(job_id, job_dir, progress)
        self._copy_checkpoints(job_id, job_dir, progress)

    def _copy_events(self, job_id: str, job_dir: Path, progress: _Progress) -> None:
        events, progress.events_offset = read_events(job_dir / EVENTS_FILE, progress.events_offset,
                                                     _MAX_EVENT_BYTES_PER_TICK)
        fresh = [e for e in events if progress.last_seq is None or e.seq > progress.last_seq]
        if not fresh:
            return
        self.store.fine_tuning.add_events(job_id, fresh)
        progress.last_seq = max(e.seq for e in fresh)
        if not progress.hyperparameters_resolved:
            for event in fresh:
                resolved = (event.data or {}).get("hyperparameters")
                if isinstance(resolved, dict) and "total_steps" in (event.data or {}):
                    self.store.fine_tuning.update_job(job_id, hyperparameters=resolved)
                    progress.hyperparameters_resolved = True

    def _copy_checkpoints(self, job_id: str, job_dir: Path, progress: _Progress) -> None:
        folder = job_dir / CHECKPOINTS_DIR
        names = checkpoint_names(folder)
        if names != progress.checkpoint_names:
            self.store.fine_tuning.sync_checkpoints(job_id, checkpoint_records(folder, names))
            progress.checkpoint_names = names

    def _append_event(self, job_id: str, job_dir: Path, message: str, *, level: str = "info",
                      data: dict[str, Any] | None = None) -> None:
        """Add a line to the job's events.jsonl and the store; only while no process of the job runs."""
        append_event(job_dir / EVENTS_FILE, message, now=self._clock(), level=level, data=data)
        self._copy_progress(job_id, job_dir)
