"""Eval suites, runs and the promotion gate.

    POST /api/v1/evals/suites              items (JSONL text or a list) + grader configs; every bad line by number
    GET  /api/v1/evals/suites              newest first
    GET  /api/v1/evals/suites/{id or name}
    POST /api/v1/evals/runs                {suite, target} -> queued; the eval worker runs it in the background
    GET  /api/v1/evals/runs                newest first (?suite= one suite's)
    GET  /api/v1/evals/runs/{id}           status queued | running | succeeded | failed, and the summary
    GET  /api/v1/evals/runs/{id}/results   per item, in item order, paged by `after` (an item index)
    POST /api/v1/evals/gates               promote a deployment only if its finished run passes the gate

The gate is a route of its own rather than a field of promote: runs take minutes, so a caller
runs the suite on the candidate deployment and on the environment's current deployment first
(`slipway promote --gate` does both), then asks the gate with the two run ids. The gate checks
that the runs are of that suite, evaluated exactly those deployments and succeeded, decides
(`slipway.evals.gate.decide`), and promotes only on a pass; a refusal is a 409 `gate_failed`
whose message names both scores, and the environment is left as it was. With `canary_percent` a
pass makes the candidate the environment's canary at that share instead of promoting it fully.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from slipway.control.auth import Principal
from slipway.control.evaluation import EvalService, EvalServices, finished_mean, get_run, get_suite, start_run
from slipway.control.plane import ControlPlane
from slipway.control.routes.common import Caller
from slipway.control.schemas import ListOf, PromotionOut
from slipway.errors import ConflictError, SlipwayError, SpecError
from slipway.store import EvalResultRow, EvalRunRow, EvalSuiteRow


class EvalsUnavailableError(SlipwayError):
    status_code = 503
    code = "evals_unavailable"


class GateFailedError(ConflictError):
    code = "gate_failed"


class SuiteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="Suite name, unique in the workspace.")
    description: str = Field("", max_length=2000, description="What the suite checks, for people.")
    items: str | list[dict[str, Any]] = Field(description="JSONL text, one item per line, or a list of items.")
    graders: list[dict[str, Any]] = Field(min_length=1, description="Grader configs, e.g. {\"type\": \"exact\"}.")
    sampling: dict[str, Any] | None = Field(None, description="temperature (0), max_tokens, concurrency (4).")


class SuiteOut(BaseModel):
    id: str
    object: str = "eval.suite"
    name: str
    description: str
    graders: list[dict[str, Any]]
    sampling: dict[str, Any]
    num_items: int
    items_hash: str
    created_at: float

    @classmethod
    def from_row(cls, row: EvalSuiteRow) -> SuiteOut:
        definition = row.definition
        return cls(id=row.id, name=row.name, description=definition.get("description", ""),
                   graders=definition.get("graders", []), sampling=definition.get("sampling", {}),
                   num_items=row.num_items, items_hash=row.items_hash, created_at=row.created_at)


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    suite: str = Field(min_length=1, description="Suite id or name.")
    target: str = Field(min_length=1, description=(
        "model, model@env, a fine-tuned model or one of its checkpoints (`…:ckpt-step-N`), dep-… or model#N."))


class RunOut(BaseModel):
    id: str
    object: str = "eval.run"
    suite_id: str
    target_kind: str = Field(description="environment (asked by model name) or deployment (asked by id).")
    target: str
    status: str = Field(description="queued, running, succeeded or failed.")
    summary: dict[str, Any] | None = Field(description="While running: progress; after: means, pass rate, 95% CIs.")
    error: dict[str, Any] | None
    created_at: float
    started_at: float | None
    finished_at: float | None

    @classmethod
    def from_row(cls, row: EvalRunRow) -> RunOut:
        return cls(id=row.id, suite_id=row.suite_id, target_kind=row.target_kind, target=row.target,
                   status=row.status, summary=row.summary, error=row.error, created_at=row.created_at,
                   started_at=row.started_at, finished_at=row.finished_at)


class ResultOut(BaseModel):
    item_index: int
    score: float
    passed: bool
    rationale: str
    sample: dict[str, Any] = Field(description="messages, ideal, output, error and each grader's verdict.")

    @classmethod
    def from_row(cls, row: EvalResultRow) -> ResultOut:
        return cls(item_index=row.item_index, score=row.score, passed=row.passed, rationale=row.rationale,
                   sample=row.sample)


class ResultPage(BaseModel):
    object: str = "list"
    data: list[ResultOut]
    has_more: bool


class GateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="The model whose environment may move.")
    deployment_id: str | None = Field(None, description="The candidate deployment's id (or give `number`).")
    number: int | None = Field(None, ge=1, description="The candidate deployment's number.")
    environment: str = Field("production", description="The environment to promote into.")
    suite: str = Field(min_length=1, description="Suite id or name both runs are of.")
    min_score: float = Field(ge=0.0, le=1.0, description="The candidate's mean score must be at least this.")
    no_regression: bool = Field(False, description="The candidate's mean must also be at least the baseline's.")
    candidate_run: str = Field(description="A succeeded run of the suite on the candidate deployment.")
    baseline_run: str | None = Field(None, description="A succeeded run on the environment's current deployment "
                                                       "(needed with no_regression while it serves one).")
    canary_percent: int | None = Field(None, ge=1, le=99, description="On a pass, make the candidate the "
                                       "environment's canary with this percent of its requests instead of "
                                       "promoting it fully.")


class GateOut(BaseModel):
    promoted: bool
    message: str
    candidate_mean: float
    baseline_mean: float | None
    promotion: PromotionOut


def router(plane: ControlPlane, services: EvalServices) -> APIRouter:
    api = APIRouter(prefix="/api/v1/evals", tags=["evals"])
    admin = Depends(Caller(plane))
    store = plane.store

    def suites() -> EvalService:
        if services.suites is None:
            raise EvalsUnavailableError("eval suites are not available in this process; use `slipway up`")
        return services.suites

    @api.post("/suites", status_code=201, response_model=SuiteOut, summary="Upload an eval suite")
    def create_suite(body: SuiteCreate, caller: Principal = admin) -> SuiteOut:
        row = suites().create(caller.workspace_id, name=body.name, items=body.items, graders=body.graders,
                              description=body.description, sampling=body.sampling)
        return SuiteOut.from_row(row)

    @api.get("/suites", response_model=ListOf[SuiteOut], summary="The workspace's eval suites, newest first")
    def list_suites(limit: int = Query(100, ge=1, le=1000), caller: Principal = admin):
        return ListOf[SuiteOut](data=[SuiteOut.from_row(s) for s in store.evals.list_suites(caller.workspace_id,
                                                                                             limit=limit)])

    @api.get("/suites/{ref}", response_model=SuiteOut, summary="An eval suite by id or name")
    def read_suite(ref: str, caller: Principal = admin) -> SuiteOut:
        return SuiteOut.from_row(get_suite(store, caller.workspace_id, ref))

    @api.post("/runs", status_code=201, response_model=RunOut, summary="Queue a run of a suite against a target")
    def create_run(body: RunCreate, caller: Principal = admin) -> RunOut:
        run = start_run(store, caller.workspace_id, body.suite, body.target, time.time())
        services.wake_runs()
        return RunOut.from_row(run)

    @api.get("/runs", response_model=ListOf[RunOut], summary="The workspace's eval runs, newest first")
    def list_runs(suite: str | None = None, limit: int = Query(20, ge=1, le=100), caller: Principal = admin):
        suite_id = get_suite(store, caller.workspace_id, suite).id if suite else None
        rows = store.evals.list_runs(caller.workspace_id, suite_id=suite_id, limit=limit)
        return ListOf[RunOut](data=[RunOut.from_row(r) for r in rows])

    @api.get("/runs/{run_id}", response_model=RunOut, summary="A run's status and summary")
    def read_run(run_id: str, caller: Principal = admin) -> RunOut:
        return RunOut.from_row(get_run(store, caller.workspace_id, run_id))

    @api.get("/runs/{run_id}/results", response_model=ResultPage, summary="A run's per-item results")
    def read_results(run_id: str, after: int = Query(-1, ge=-1, description="Item index to start after."),
                     limit: int = Query(100, ge=1, le=1000), failed_only: bool = False,
                     caller: Principal = admin) -> ResultPage:
        get_run(store, caller.workspace_id, run_id)
        rows = store.evals.list_results(caller.workspace_id, run_id, after_index=after, limit=limit + 1,
                                        failed_only=failed_only)
        return ResultPage(data=[ResultOut.from_row(r) for r in rows[:limit]], has_more=len(rows) > limit)

    @api.post("/gates", response_model=GateOut, summary="Promote a deployment only if its eval run passes the gate")
    def gate(body: GateRequest, caller: Principal = admin) -> GateOut:
        if (body.deployment_id is None) == (body.number is None):
            raise SpecError("give either deployment_id or number of the candidate deployment", code="invalid_gate")
        workspace_id = caller.workspace_id
        model = plane.get_model(workspace_id, body.model)
        candidate = next((d for d in store.deployments.list_for_model(model.id)
                          if d.id == body.deployment_id or d.number == body.number), None)
        if candidate is None:
            which = body.deployment_id or f"#{body.number}"
            raise SpecError(f"model {body.model!r} has no deployment {which}; `slipway ls` lists them",
                            code="invalid_gate")
        suite = get_suite(store, workspace_id, body.suite)
        environment = store.environments.get(model.id, body.environment)
        serving = environment.deployment_id if environment else None
        candidate_mean = finished_mean(store, workspace_id, body.candidate_run, suite_id=suite.id,
                                       deployment_id=candidate.id, role="candidate")
        baseline_mean = None
        if serving is not None and serving != candidate.id and (body.no_regression or body.baseline_run):
            if body.baseline_run is None:
                raise SpecError(f"no_regression needs baseline_run: a succeeded run of {suite.name!r} on {serving}, "
                                f"which serves {body.environment}", code="invalid_gate")
            baseline_mean = finished_mean(store, workspace_id, body.baseline_run, suite_id=suite.id,
                                          deployment_id=serving, role="baseline")
        promote, message = suites().decide_gate(suite=suite.name, min_score=body.min_score,
                                                no_regression=body.no_regression, candidate_mean=candidate_mean,
                                                production_mean=baseline_mean)
        if not promote:
            raise GateFailedError(message)
        env, target = plane.promote(workspace_id, body.model, body.environment, deployment_id=candidate.id,
                                    canary_percent=body.canary_percent)
        promotion = PromotionOut.from_rows(body.model, env, target)
        return GateOut(promoted=True, message=message, candidate_mean=candidate_mean, baseline_mean=baseline_mean,
                       promotion=promotion)

    return api
