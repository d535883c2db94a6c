"""Evals as the control plane sees them: targets, queued runs, the promotion gate, and the runs' keys.

Grading and running suites is work of `slipway.evals`, which the control plane may not import, so
the routes reach it through `EvalService`, which the composition root (`slipway.app`) builds from
`slipway.evals.catalog.SuiteCatalog` and hands to `create_control_app` inside `EvalServices`:

    routes/evals.py ──► EvalServices.suites (EvalService) ──► evals: validate suites, gate decisions
                   ──► start_run (here) ──► store (queued) ──► EvalServices.wake_runs()
                                                               └─► EvalWorker (evals.runner)

A target names what a run asks, through the gateway:

    "dep-3f9a…"           one deployment                          kind deployment
    "bot#3"               deployment number 3 of model bot        kind deployment (stored by id)
    "bot", "bot@staging"  what the model (environment) resolves to; fine-tuned model names, and
                          their checkpoints ("bot:ft-x:ckpt-step-40"), alike  kind environment
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from slipway.errors import ConflictError, NotFoundError, SpecError
from slipway.store import EvalRunRow, EvalSuiteRow, Store
from slipway.spec.snapshot import SCOPE_INVOKE

EVAL_KEY_NAME = "eval-runs"


class EvalService(Protocol):
    """Suite files and gate decisions, from `slipway.evals`."""

    def create(self, workspace_id: str, *, name: str, items: str | list[dict[str, Any]],
               graders: list[dict[str, Any]], description: str = "",
               sampling: dict[str, Any] | None = None) -> EvalSuiteRow:
        """Validate items (every bad line by number) and graders, write the items, insert the row."""
        ...

    def decide_gate(self, *, suite: str, min_score: float, no_regression: bool, candidate_mean: float,
                    production_mean: float | None) -> tuple[bool, str]:
        """(promote?, the one line that says why), from the two mean scores."""
        ...


@dataclass(frozen=True)
class EvalServices:
    """What the eval routes need from outside the control package."""

    suites: EvalService | None = None
    """Suite validation and gate decisions; None answers eval suite uploads and gates with 503."""
    wake_runs: Callable[[], None] = field(default=lambda: None)
    """Asks the eval worker to look for queued runs now."""


# ---- suites, targets and runs -----------------------------------------------------------------------

def get_suite(store: Store, workspace_id: str, ref: str) -> EvalSuiteRow:
    """A suite of the workspace by id or by name."""
    suite = store.evals.get_suite(workspace_id, ref) or store.evals.get_suite_by_name(workspace_id, ref)
    if suite is None:
        raise NotFoundError(f"eval suite {ref!r} not found; GET /api/v1/evals/suites (or `slipway evals suites ls`) "
                            "lists your suites")
    return suite


def get_run(store: Store, workspace_id: str, run_id: str) -> EvalRunRow:
    run = store.evals.get_run(workspace_id, run_id)
    if run is None:
        raise NotFoundError(f"eval run {run_id!r} not found; GET /api/v1/evals/runs lists your runs")
    return run


def resolve_target(store: Store, workspace_id: str, target: str) -> tuple[str, str]:
    """(target_kind, target) for a target string; unknown models or deployments are 404."""
    target = target.strip()
    if not target:
        raise SpecError("target is empty; give a model (name or name@env), a deployment id or name#N",
                        code="invalid_target")
    if target.startswith("dep-"):
        deployment = store.deployments.get(target, workspace_id=workspace_id)
        if deployment is None:
            raise NotFoundError(f"deployment {target!r} not found; `slipway ls` lists your deployments")
        return "deployment", deployment.id
    name, sep, number = target.partition("#")
    if sep:
        model = store.models.get(workspace_id, name)
        if model is None or not number.isdigit():
            raise NotFoundError(f"no deployment {target!r}: write MODEL#N with an existing model and deployment "
                                "number (`slipway ls` lists them)")
        deployment = next((d for d in store.deployments.list_for_model(model.id) if d.number == int(number)), None)
        if deployment is None:
            raise NotFoundError(f"model {name!r} has no deployment #{number}; `slipway ls` lists them")
        return "deployment", deployment.id
    name, _, environment = target.partition("@")
    model = store.models.get(workspace_id, name)
    if model is None and not environment and _is_checkpoint(store, workspace_id, name):
        return "environment", target  # served on its base's replicas, like the fine-tuned model
    if model is None:
        raise NotFoundError(f"model {name!r} not found; `slipway ls` lists your models")
    if environment and store.environments.get(model.id, environment) is None:
        raise NotFoundError(f"model {name!r} has no environment {environment!r}")
    return "environment", target


def _is_checkpoint(store: Store, workspace_id: str, name: str) -> bool:
    """Whether `name` is `<fine-tuned model>:ckpt-step-N` of a checkpoint the workspace has."""
    fine_tuned, marker, step = name.rpartition(":ckpt-step-")
    if not marker or not step.isdigit():
        return False
    job = store.fine_tuning.get_by_fine_tuned_model(workspace_id, fine_tuned)
    return job is not None and any(c.step == int(step) for c in store.fine_tuning.list_checkpoints(workspace_id, job.id))


def start_run(store: Store, workspace_id: str, suite_ref: str, target: str, now: float) -> EvalRunRow:
    """Queue a run of the suite against the target; the eval worker takes it on."""
    suite = get_suite(store, workspace_id, suite_ref)
    kind, resolved = resolve_target(store, workspace_id, target)
    return store.evals.create_run(workspace_id, suite_id=suite.id, target_kind=kind,  # type: ignore[arg-type]
                                  target=resolved, now=now)


# ---- the gate ---------------------------------------------------------------------------------------

def finished_mean(store: Store, workspace_id: str, run_id: str, *, suite_id: str, deployment_id: str,
                  role: str) -> float:
    """The mean score of a succeeded run of `suite_id` on `deployment_id`; SpecError/ConflictError otherwise."""
    run = get_run(store, workspace_id, run_id)
    if run.suite_id != suite_id:
        raise SpecError(f"{role} run {run_id} is of another suite; run the gate's suite on the {role}",
                        code="invalid_gate")
    if run.target_kind != "deployment" or run.target != deployment_id:
        raise ConflictError(f"{role} run {run_id} evaluated {run.target}, not deployment {deployment_id}; "
                            f"run the suite on {deployment_id} and gate with that run")
    if run.status != "succeeded" or not run.summary:
        detail = f": {run.error['message']}" if run.error else ""
        raise ConflictError(f"{role} run {run_id} is {run.status}{detail}; gate on a run that succeeded")
    return float(run.summary["mean_score"])


# ---- the key runs call the gateway with -------------------------------------------------------------

class EvalKeys:
    """One invoke key per workspace for eval runs, made the first time a process needs it.

    Secrets are kept only in memory; keys this name left by an earlier process are revoked when a
    new one is made, so at most one stays usable.
    """

    def __init__(self, plane: Any) -> None:
        self.plane = plane
        self._secrets: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, workspace_id: str) -> str:
        with self._lock:
            secret = self._secrets.get(workspace_id)
            if secret is None:
                for key in self.plane.store.keys.list(workspace_id):
                    if key.name == EVAL_KEY_NAME and key.revoked_at is None:
                        self.plane.revoke_key(workspace_id, key.id)
                created = self.plane.create_key(workspace_id, name=EVAL_KEY_NAME, scopes=[SCOPE_INVOKE], models=None)
                secret = self._secrets[workspace_id] = created.secret
            return secret
