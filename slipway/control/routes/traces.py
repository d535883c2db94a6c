"""Traces: captured request/response pairs, listed with filters, and the feedback people give them.

    GET  /api/v1/traces                  ?model=&environment=&since=&until=&tag=&min_feedback_score=
                                         &has_feedback=, newest first, paged by `after` and `limit`
    GET  /api/v1/traces/{id}
    POST /api/v1/traces/{id}/feedback    {"score": 0..1, "label": "...", "corrected_output": "..."}

A corrected output is the answer the model should have given; datasets built from traces teach it
in place of the captured response.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from slipway.control.auth import Principal
from slipway.control.plane import ControlPlane
from slipway.control.routes.common import Caller
from slipway.control.routes.usage import parse_time
from slipway.errors import NotFoundError
from slipway.store import TraceFilter, TraceRow

LABEL_MAX_CHARS = 100
CORRECTED_OUTPUT_MAX_CHARS = 1_000_000


class TraceOut(BaseModel):
    id: str
    object: str = "trace"
    model: str
    environment: str | None
    deployment_id: str | None
    request: dict[str, Any]
    response: dict[str, Any] | None
    status_code: int
    latency_ms: float
    prompt_tokens: int | None
    completion_tokens: int | None
    tags: list[str]
    created_at: float
    feedback_score: float | None
    feedback_label: str | None
    corrected_output: str | None
    feedback_at: float | None

    @classmethod
    def from_row(cls, row: TraceRow) -> TraceOut:
        return cls(id=row.id, model=row.model, environment=row.environment, deployment_id=row.deployment_id,
                   request=row.request, response=row.response, status_code=row.status_code,
                   latency_ms=row.latency_ms, prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens,
                   tags=list(row.tags), created_at=row.created_at, feedback_score=row.feedback_score,
                   feedback_label=row.feedback_label, corrected_output=row.corrected_output,
                   feedback_at=row.feedback_at)


class TracePage(BaseModel):
    object: str = "list"
    data: list[TraceOut]
    has_more: bool


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    score: float | None = Field(None, ge=0, le=1, description="How good the response was, 0 (bad) to 1 (good).")
    label: str | None = Field(None, min_length=1, max_length=LABEL_MAX_CHARS, description="A short tag, e.g. "
                                                                                         "'wrong-tone'.")
    corrected_output: str | None = Field(None, max_length=CORRECTED_OUTPUT_MAX_CHARS,
                                         description="The answer the model should have given.")

    @model_validator(mode="after")
    def _something_given(self) -> FeedbackRequest:
        if self.score is None and self.label is None and self.corrected_output is None:
            raise ValueError("give at least one of score, label, corrected_output")
        return self


def router(plane: ControlPlane) -> APIRouter:
    api = APIRouter(prefix="/api/v1/traces", tags=["traces"])
    admin = Depends(Caller(plane))

    @api.get("", response_model=TracePage, summary="The workspace's traces, newest first")
    def list_traces(
        caller: Principal = admin,
        model: str | None = Query(None, description="Only traces of this model."),
        environment: str | None = Query(None, description="Only traces served by this environment."),
        since: str | None = Query(None, description="Created at or after: ISO 8601 or Unix seconds."),
        until: str | None = Query(None, description="Created before: ISO 8601 or Unix seconds."),
        tag: list[str] = Query([], max_length=32, description="Traces carrying this tag (repeat for several)."),
        min_feedback_score: float | None = Query(None, ge=0, le=1, description="Scored at least this, or corrected."),
        has_feedback: bool | None = Query(None, description="true: only traces with feedback; false: without."),
        after: str | None = Query(None, description="Continue after this trace id."),
        limit: int = Query(20, ge=1, le=100),
    ) -> TracePage:
        where = TraceFilter(model=model, environment=environment, since=parse_time(since, "since"),
                            until=parse_time(until, "until"), tags=tuple(tag), min_feedback_score=min_feedback_score,
                            has_feedback=has_feedback)
        rows = plane.store.traces.list(caller.workspace_id, where, limit=limit + 1, after=after)
        return TracePage(data=[TraceOut.from_row(r) for r in rows[:limit]], has_more=len(rows) > limit)

    @api.get("/{trace_id}", response_model=TraceOut, summary="One trace with its feedback")
    def get_trace(trace_id: str, caller: Principal = admin) -> TraceOut:
        row = plane.store.traces.get(caller.workspace_id, trace_id)
        if row is None:
            raise _not_found(trace_id)
        return TraceOut.from_row(row)

    @api.post("/{trace_id}/feedback", response_model=TraceOut,
              summary="Score, label or correct a trace (fields left out keep their value)")
    def give_feedback(trace_id: str, body: FeedbackRequest, caller: Principal = admin) -> TraceOut:
        row = plane.store.traces.set_feedback(caller.workspace_id, trace_id, time.time(), score=body.score,
                                              label=body.label, corrected_output=body.corrected_output)
        if row is None:
            raise _not_found(trace_id)
        return TraceOut.from_row(row)

    return api


def _not_found(trace_id: str) -> NotFoundError:
    return NotFoundError(f"trace {trace_id!r} not found; GET /api/v1/traces lists your traces")
