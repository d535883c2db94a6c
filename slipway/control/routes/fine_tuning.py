"""Fine-tuning jobs in OpenAI's shape, so `openai.OpenAI(base_url=".../api/v1").fine_tuning.jobs` works.

    POST /api/v1/fine_tuning/jobs                       create (model, training_file = a dataset id, ...)
    GET  /api/v1/fine_tuning/jobs                       newest first, paged by `after` and `limit`
    GET  /api/v1/fine_tuning/jobs/{id}
    POST /api/v1/fine_tuning/jobs/{id}/cancel
    GET  /api/v1/fine_tuning/jobs/{id}/events           newest first, paged by `after` and `limit`
    GET  /api/v1/fine_tuning/jobs/{id}/checkpoints      latest step first, paged by `after` and `limit`

Creating checks the base model and the datasets at once (an unknown model is a 400 naming the
models that can be fine-tuned) and leaves the job validating_files; the job supervisor
(`slipway.control.jobs`) takes it from there.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from slipway.control.auth import Principal
from slipway.control.learning import LearningServices, cancel_job, create_job, get_job
from slipway.control.plane import ControlPlane
from slipway.control.routes.common import Caller
from slipway.spec.fine_tuning import (
    FineTuningCheckpointObject,
    FineTuningError,
    FineTuningEventObject,
    FineTuningJobCreate,
    FineTuningJobObject,
    checkpoint_model_name,
    fine_tuned_model_name,
)
from slipway.store import FineTuningCheckpointRow, FineTuningEventRow, FineTuningJobRow


class JobPage(BaseModel):
    object: str = "list"
    data: list[FineTuningJobObject]
    has_more: bool


class EventPage(BaseModel):
    object: str = "list"
    data: list[FineTuningEventObject]
    has_more: bool


class CheckpointPage(BaseModel):
    object: str = "list"
    data: list[FineTuningCheckpointObject]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


def job_object(job: FineTuningJobRow) -> FineTuningJobObject:
    hyperparameters = dict(job.hyperparameters)
    return FineTuningJobObject(
        id=job.id, created_at=int(job.created_at), error=FineTuningError(**job.error) if job.error else None,
        fine_tuned_model=job.fine_tuned_model, finished_at=_seconds(job.finished_at), hyperparameters=hyperparameters,
        model=job.model, organization_id=job.workspace_id, seed=job.seed, status=job.status,  # type: ignore[arg-type]
        trained_tokens=job.trained_tokens, training_file=job.training_file, validation_file=job.validation_file,
        method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}, suffix=job.suffix,
    )


def event_object(event: FineTuningEventRow) -> FineTuningEventObject:
    return FineTuningEventObject.model_validate({"id": event.id, "created_at": int(event.created_at),
                                                 "level": event.level, "message": event.message, "type": event.type,
                                                 "data": event.data})


def checkpoint_object(job: FineTuningJobRow, checkpoint: FineTuningCheckpointRow) -> FineTuningCheckpointObject:
    model = job.fine_tuned_model or fine_tuned_model_name(job.model, job.id, job.suffix)
    return FineTuningCheckpointObject(
        id=checkpoint.id, created_at=int(checkpoint.created_at),
        fine_tuned_model_checkpoint=checkpoint_model_name(model, checkpoint.step), fine_tuning_job_id=job.id,
        metrics={**checkpoint.metrics, "step": checkpoint.step}, step_number=checkpoint.step)


def router(plane: ControlPlane, learning: LearningServices) -> APIRouter:
    api = APIRouter(prefix="/api/v1/fine_tuning/jobs", tags=["fine-tuning"])
    admin = Depends(Caller(plane))

    @api.post("", response_model=FineTuningJobObject, summary="Create a LoRA fine-tuning job (OpenAI's shape)")
    def create_fine_tuning_job(body: FineTuningJobCreate, caller: Principal = admin) -> FineTuningJobObject:
        job = create_job(plane.store, caller.workspace_id, body, time.time())
        learning.wake_jobs()
        return job_object(job)

    @api.get("", response_model=JobPage, summary="The workspace's fine-tuning jobs, newest first")
    def list_fine_tuning_jobs(caller: Principal = admin,
                              after: str | None = Query(None, description="Continue after this job id."),
                              limit: int = Query(20, ge=1, le=100)) -> JobPage:
        rows = plane.store.fine_tuning.list_jobs(caller.workspace_id, limit=limit + 1, after=after)
        return JobPage(data=[job_object(r) for r in rows[:limit]], has_more=len(rows) > limit)

    @api.get("/{job_id}", response_model=FineTuningJobObject, summary="One fine-tuning job")
    def retrieve_fine_tuning_job(job_id: str, caller: Principal = admin) -> FineTuningJobObject:
        return job_object(get_job(plane.store, caller.workspace_id, job_id))

    @api.post("/{job_id}/cancel", response_model=FineTuningJobObject, summary="Cancel a fine-tuning job")
    def cancel_fine_tuning_job(job_id: str, caller: Principal = admin) -> FineTuningJobObject:
        job = cancel_job(plane.store, caller.workspace_id, job_id, time.time())
        learning.wake_jobs()
        return job_object(job)

    @api.get("/{job_id}/events", response_model=EventPage, summary="A job's events, newest first")
    def list_fine_tuning_events(job_id: str, caller: Principal = admin,
                                after: str | None = Query(None, description="Continue after this event id."),
                                limit: int = Query(20, ge=1, le=500)) -> EventPage:
        job = get_job(plane.store, caller.workspace_id, job_id)
        rows = plane.store.fine_tuning.list_events(caller.workspace_id, job.id, limit=limit + 1, after=after)
        return EventPage(data=[event_object(r) for r in rows[:limit]], has_more=len(rows) > limit)

    @api.get("/{job_id}/checkpoints", response_model=CheckpointPage, summary="A job's checkpoints, latest first")
    def list_fine_tuning_checkpoints(job_id: str, caller: Principal = admin,
                                     after: str | None = Query(None, description="Continue after this checkpoint id."),
                                     limit: int = Query(10, ge=1, le=100)) -> CheckpointPage:
        job = get_job(plane.store, caller.workspace_id, job_id)
        rows = plane.store.fine_tuning.list_checkpoints(caller.workspace_id, job.id)
        if after is not None:
            ids = [r.id for r in rows]
            rows = rows[ids.index(after) + 1:] if after in ids else []
        data = [checkpoint_object(job, r) for r in rows[:limit]]
        return CheckpointPage(data=data, has_more=len(rows) > limit, first_id=data[0].id if data else None,
                              last_id=data[-1].id if data else None)

    return api


def _seconds(value: float | None) -> int | None:
    return int(value) if value is not None else None
