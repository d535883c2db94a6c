"""Fine-tuning jobs in OpenAI's shape, their events and their checkpoints.

A job moves through OpenAI's statuses:

    validating_files ──► queued ──► running ──┬──► succeeded
           │               │           │      ├──► failed
           └───────────────┴───────────┴──────┴──► cancelled

`transition` is a compare-and-set: it changes the status only when the job is in one of the
expected statuses, so a cancel racing the job's own finish leaves exactly one outcome. A finished
job (succeeded, failed, cancelled) never changes status again.

Events and checkpoints are copied in from the job's folder (events.jsonl, checkpoints/step-N),
keyed by the event's sequence number and the checkpoint's step, so copying the same file twice,
or after a restart of the control plane, adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, func, insert, select, update

from slipway.store.repositories.base import Repository, new_id
from slipway.store.repositories.paging import newest_first
from slipway.store.tables import fine_tuning_checkpoints, fine_tuning_events, fine_tuning_jobs

JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
JOB_STATUSES: tuple[str, ...] = ("validating_files", "queued", "running", "succeeded", "failed", "cancelled")
FINISHED_STATUSES: tuple[str, ...] = ("succeeded", "failed", "cancelled")
UNFINISHED_STATUSES: tuple[str, ...] = ("validating_files", "queued", "running")
EVENT_LEVELS: tuple[str, ...] = ("info", "warn", "error")
EVENT_TYPES: tuple[str, ...] = ("message", "metrics")
MAX_EVENTS_PAGE = 1000
_JOB_ID_BYTES = 12  # 'ftjob-' + 24 hex characters, like OpenAI's ids
_UNSET: Any = object()


@dataclass(frozen=True)
class FineTuningJobRow:
    id: str
    workspace_id: str
    model: str
    """The base model's name, as the job was asked for it."""
    training_file: str
    """A dataset id."""
    validation_file: str | None
    hyperparameters: dict[str, Any]
    suffix: str | None
    status: str
    fine_tuned_model: str | None
    error: dict[str, Any] | None
    """OpenAI's {"code", "message", "param"} when the job failed."""
    trained_tokens: int | None
    seed: int
    job_dir: str | None
    pid: int | None
    created_at: float
    started_at: float | None
    finished_at: float | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES


@dataclass(frozen=True)
class FineTuningEventRow:
    id: str
    job_id: str
    seq: int
    level: str
    type: str
    message: str
    data: dict[str, Any] | None
    created_at: float


@dataclass(frozen=True)
class EventRecord:
    """One line of a job's events.jsonl, as the job process wrote it."""

    seq: int
    level: str
    message: str
    created_at: float
    type: str = "message"
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class FineTuningCheckpointRow:
    id: str
    job_id: str
    step: int
    metrics: dict[str, Any]
    path: str
    """The checkpoint's folder; its adapter/ subfolder is a PEFT adapter."""
    created_at: float


@dataclass(frozen=True)
class CheckpointRecord:
    """A checkpoint the job wrote, as found in its folder."""

    step: int
    metrics: dict[str, Any]
    path: str
    created_at: float


def _job(r) -> FineTuningJobRow:
    return FineTuningJobRow(
        id=r.id, workspace_id=r.workspace_id, model=r.model, training_file=r.training_file,
        validation_file=r.validation_file, hyperparameters=dict(r.hyperparameters), suffix=r.suffix,
        status=r.status, fine_tuned_model=r.fine_tuned_model, error=r.error, trained_tokens=r.trained_tokens,
        seed=r.seed, job_dir=r.job_dir, pid=r.pid, created_at=r.created_at, started_at=r.started_at,
        finished_at=r.finished_at,
    )


def _event(r) -> FineTuningEventRow:
    return FineTuningEventRow(id=r.id, job_id=r.job_id, seq=r.seq, level=r.level, type=r.type, message=r.message,
                              data=r.data, created_at=r.created_at)


def _checkpoint(r) -> FineTuningCheckpointRow:
    return FineTuningCheckpointRow(id=r.id, job_id=r.job_id, step=r.step, metrics=dict(r.metrics), path=r.path,
                                   created_at=r.created_at)


class FineTuningRepository(Repository):
    # ---- jobs ----------------------------------------------------------------------------------

    def create_job(self, workspace_id: str, *, model: str, training_file: str, hyperparameters: dict[str, Any],
                   seed: int, now: float, validation_file: str | None = None, suffix: str | None = None,
                   status: JobStatus = "validating_files", job_dir: str | None = None) -> FineTuningJobRow:
        _check_status(status)
        job_id = new_id("ftjob", _JOB_ID_BYTES)
        with self._scope() as conn:
            conn.execute(insert(fine_tuning_jobs).values(
                id=job_id, workspace_id=workspace_id, model=model, training_file=training_file,
                validation_file=validation_file, hyperparameters=hyperparameters, suffix=suffix, status=status,
                seed=seed, job_dir=job_dir, created_at=now,
            ))
            return _job(conn.execute(select(fine_tuning_jobs).where(fine_tuning_jobs.c.id == job_id)).one())

    def get_job(self, workspace_id: str, job_id: str) -> FineTuningJobRow | None:
        """The job; None if it does not exist or belongs to another workspace."""
        with self._scope() as conn:
            r = conn.execute(select(fine_tuning_jobs).where(fine_tuning_jobs.c.workspace_id == workspace_id,
                                                            fine_tuning_jobs.c.id == job_id)).first()
        return _job(r) if r else None

    def list_jobs(self, workspace_id: str, *, limit: int = 20, after: str | None = None,
                  statuses: Sequence[str] | None = None) -> list[FineTuningJobRow]:
        """The workspace's jobs, newest first; `after` (a job id) continues past it."""
        query = select(fine_tuning_jobs).where(fine_tuning_jobs.c.workspace_id == workspace_id)
        if statuses is not None:
            query = query.where(fine_tuning_jobs.c.status.in_(list(statuses)))
        with self._scope() as conn:
            rows = newest_first(conn, query, fine_tuning_jobs, workspace_id=workspace_id, after=after, limit=limit)
        return [_job(r) for r in rows]

    def list_fine_tuned(self) -> list[FineTuningJobRow]:
        """Succeeded jobs of every workspace that registered a model, oldest first.

        For the routing snapshot: each names a fine-tuned model, its base and its adapter's folder.
        """
        with self._scope() as conn:
            rows = conn.execute(select(fine_tuning_jobs)
                                .where(fine_tuning_jobs.c.status == "succeeded",
                                       fine_tuning_jobs.c.fine_tuned_model.is_not(None))
                                .order_by(fine_tuning_jobs.c.created_at, fine_tuning_jobs.c.id)).all()
        return [_job(r) for r in rows]

    def checkpoints_of_fine_tuned(self) -> list[FineTuningCheckpointRow]:
        """The checkpoints of every succeeded job that registered a model, by job then step."""
        query = (select(fine_tuning_checkpoints)
                 .join(fine_tuning_jobs, fine_tuning_jobs.c.id == fine_tuning_checkpoints.c.job_id)
                 .where(fine_tuning_jobs.c.status == "succeeded", fine_tuning_jobs.c.fine_tuned_model.is_not(None))
                 .order_by(fine_tuning_checkpoints.c.job_id, fine_tuning_checkpoints.c.step))
        with self._scope() as conn:
            rows = conn.execute(query).all()
        return [_checkpoint(r) for r in rows]

    def get_by_fine_tuned_model(self, workspace_id: str, name: str) -> FineTuningJobRow | None:
        """The succeeded job that registered the model `name` in the workspace; None if none did."""
        with self._scope() as conn:
            r = conn.execute(select(fine_tuning_jobs)
                             .where(fine_tuning_jobs.c.workspace_id == workspace_id,
                                    fine_tuning_jobs.c.status == "succeeded",
                                    fine_tuning_jobs.c.fine_tuned_model == name)).first()
        return _job(r) if r else None

    def list_unfinished(self) -> list[FineTuningJobRow]:
        """Jobs of every workspace that still need work (validating, queued, running), oldest first.

        For the control loop that starts, watches and restarts job processes.
        """
        with self._scope() as conn:
            rows = conn.execute(select(fine_tuning_jobs)
                                .where(fine_tuning_jobs.c.status.in_(UNFINISHED_STATUSES))
                                .order_by(fine_tuning_jobs.c.created_at, fine_tuning_jobs.c.id)).all()
        return [_job(r) for r in rows]

    def transition(self, job_id: str, status: JobStatus, now: float, *,
                   expected: Sequence[str] = UNFINISHED_STATUSES, fine_tuned_model: str | None = _UNSET,
                   error: dict[str, Any] | None = _UNSET, trained_tokens: int | None = _UNSET,
                   pid: int | None = _UNSET) -> FineTuningJobRow | None:
        """Move the job to `status` if it is in one of `expected`; None when it was not (or does not exist).

        Entering `running` stamps started_at (the first time); entering a finished status stamps
        finished_at and clears pid.
        """
        _check_status(status)
        if any(s in FINISHED_STATUSES for s in expected):
            raise ValueError(f"a finished job never changes status; expected must be among {UNFINISHED_STATUSES}")
        values: dict[str, Any] = {"status": status}
        if status == "running":
            values["started_at"] = func.coalesce(fine_tuning_jobs.c.started_at, now)
        if status in FINISHED_STATUSES:
            values.update(finished_at=now, pid=None)
        for name, value in (("fine_tuned_model", fine_tuned_model), ("error", error),
                            ("trained_tokens", trained_tokens), ("pid", pid)):
            if value is not _UNSET:
                values[name] = value
        with self._scope() as conn:
            result = conn.execute(update(fine_tuning_jobs).where(
                fine_tuning_jobs.c.id == job_id, fine_tuning_jobs.c.status.in_(list(expected))).values(**values))
            if result.rowcount == 0:
                return None
            return _job(conn.execute(select(fine_tuning_jobs).where(fine_tuning_jobs.c.id == job_id)).one())

    def update_job(self, job_id: str, *, job_dir: str | None = _UNSET, pid: int | None = _UNSET,
                   trained_tokens: int | None = _UNSET,
                   hyperparameters: dict[str, Any] = _UNSET) -> FineTuningJobRow | None:
        """Change the given non-status fields (e.g. the resolved hyperparameters once a job starts)."""
        values = {name: value for name, value in (("job_dir", job_dir), ("pid", pid),
                                                  ("trained_tokens", trained_tokens),
                                                  ("hyperparameters", hyperparameters)) if value is not _UNSET}
        with self._scope() as conn:
            if values:
                conn.execute(update(fine_tuning_jobs).where(fine_tuning_jobs.c.id == job_id).values(**values))
            r = conn.execute(select(fine_tuning_jobs).where(fine_tuning_jobs.c.id == job_id)).first()
        return _job(r) if r else None

    # ---- events --------------------------------------------------------------------------------

    def add_events(self, job_id: str, events: Sequence[EventRecord]) -> int:
        """Store events whose seq the job does not have yet; returns how many were new."""
        for event in events:
            if event.level not in EVENT_LEVELS:
                raise ValueError(f"unknown event level {event.level!r}; one of {EVENT_LEVELS}")
            if event.type not in EVENT_TYPES:
                raise ValueError(f"unknown event type {event.type!r}; one of {EVENT_TYPES}")
        with self._scope() as conn:
            known = {seq for (seq,) in conn.execute(select(fine_tuning_events.c.seq).where(
                fine_tuning_events.c.job_id == job_id,
                fine_tuning_events.c.seq.in_([e.seq for e in events])))}
            fresh = {e.seq: e for e in events if e.seq not in known}
            if fresh:
                conn.execute(insert(fine_tuning_events), [
                    {"id": new_id("ftevent", _JOB_ID_BYTES), "job_id": job_id, "seq": e.seq, "level": e.level,
                     "type": e.type, "message": e.message, "data": e.data, "created_at": e.created_at}
                    for e in fresh.values()])
        return len(fresh)

    def last_event_seq(self, job_id: str) -> int | None:
        """The highest seq stored for the job: where copying its events.jsonl picks up."""
        with self._scope() as conn:
            return conn.execute(select(func.max(fine_tuning_events.c.seq))
                                .where(fine_tuning_events.c.job_id == job_id)).scalar()

    def list_events(self, workspace_id: str, job_id: str, *, limit: int = 20,
                    after: str | None = None) -> list[FineTuningEventRow]:
        """The job's events newest first, as OpenAI lists them; `after` (an event id) continues past it."""
        query = (select(fine_tuning_events)
                 .join(fine_tuning_jobs, fine_tuning_jobs.c.id == fine_tuning_events.c.job_id)
                 .where(fine_tuning_jobs.c.workspace_id == workspace_id, fine_tuning_events.c.job_id == job_id))
        with self._scope() as conn:
            if after is not None:
                cursor = conn.execute(select(fine_tuning_events.c.seq).where(
                    fine_tuning_events.c.job_id == job_id, fine_tuning_events.c.id == after)).first()
                if cursor is None:
                    return []
                query = query.where(fine_tuning_events.c.seq < cursor.seq)
            rows = conn.execute(query.order_by(fine_tuning_events.c.seq.desc())
                                .limit(max(1, min(limit, MAX_EVENTS_PAGE)))).all()
        return [_event(r) for r in rows]

    def events_since(self, workspace_id: str, job_id: str, seq: int = -1, *,
                     limit: int = MAX_EVENTS_PAGE) -> list[FineTuningEventRow]:
        """Events with a seq above `seq`, oldest first: what a follower (`slipway ... --follow`) reads."""
        query = (select(fine_tuning_events)
                 .join(fine_tuning_jobs, fine_tuning_jobs.c.id == fine_tuning_events.c.job_id)
                 .where(fine_tuning_jobs.c.workspace_id == workspace_id, fine_tuning_events.c.job_id == job_id,
                        fine_tuning_events.c.seq > seq)
                 .order_by(fine_tuning_events.c.seq).limit(max(1, min(limit, MAX_EVENTS_PAGE))))
        with self._scope() as conn:
            rows = conn.execute(query).all()
        return [_event(r) for r in rows]

    # ---- checkpoints ---------------------------------------------------------------------------

    def sync_checkpoints(self, job_id: str, found: Sequence[CheckpointRecord]) -> bool:
        """Make the job's checkpoint rows match what its folder holds now; True if anything changed.

        New steps are inserted, steps no longer on disk (pruned by the job) are deleted, and a
        step already stored keeps its row and id.
        """
        with self._scope() as conn:
            stored = {step for (step,) in conn.execute(select(fine_tuning_checkpoints.c.step)
                                                       .where(fine_tuning_checkpoints.c.job_id == job_id))}
            wanted = {c.step: c for c in found}
            gone = stored - set(wanted)
            fresh = [c for step, c in sorted(wanted.items()) if step not in stored]
            if gone:
                conn.execute(delete(fine_tuning_checkpoints).where(fine_tuning_checkpoints.c.job_id == job_id,
                                                                   fine_tuning_checkpoints.c.step.in_(gone)))
            if fresh:
                conn.execute(insert(fine_tuning_checkpoints), [
                    {"id": new_id("ftckpt", _JOB_ID_BYTES), "job_id": job_id, "step": c.step, "metrics": c.metrics,
                     "path": c.path, "created_at": c.created_at} for c in fresh])
        return bool(gone or fresh)

    def list_checkpoints(self, workspace_id: str, job_id: str) -> list[FineTuningCheckpointRow]:
        """The job's checkpoints, latest step first (OpenAI's order)."""
        query = (select(fine_tuning_checkpoints)
                 .join(fine_tuning_jobs, fine_tuning_jobs.c.id == fine_tuning_checkpoints.c.job_id)
                 .where(fine_tuning_jobs.c.workspace_id == workspace_id, fine_tuning_checkpoints.c.job_id == job_id)
                 .order_by(fine_tuning_checkpoints.c.step.desc()))
        with self._scope() as conn:
            rows = conn.execute(query).all()
        return [_checkpoint(r) for r in rows]

    def get_checkpoint(self, workspace_id: str, checkpoint_id: str) -> FineTuningCheckpointRow | None:
        """A checkpoint by id (e.g. an eval run's target); None if not in the workspace."""
        query = (select(fine_tuning_checkpoints)
                 .join(fine_tuning_jobs, fine_tuning_jobs.c.id == fine_tuning_checkpoints.c.job_id)
                 .where(fine_tuning_jobs.c.workspace_id == workspace_id, fine_tuning_checkpoints.c.id == checkpoint_id))
        with self._scope() as conn:
            r = conn.execute(query).first()
        return _checkpoint(r) if r else None


def _check_status(status: str) -> None:
    if status not in JOB_STATUSES:
        raise ValueError(f"unknown fine-tuning job status {status!r}; one of {JOB_STATUSES}")
