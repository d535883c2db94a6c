"""Environments, promotion, canaries and rollback: which deployments serve each environment, and when.

The rule that keeps traffic flowing: when an environment moves from deployment A to B, A keeps
serving until B has a ready replica (status active). Until then B is the environment's
*pending* deployment; the control loop switches it over (`resolve_pending`) on the tick B
becomes active. A deployment no environment serves, waits for or tries out as its canary any
more is retired (inactive, no replicas). If nothing ready serves the environment, a promotion
takes effect at once.

    promote(A -> B):   env.deployment = A, env.pending = B      (A serves)
    B becomes active:  env.deployment = B, env.pending = None   (B serves; A retired unless used elsewhere)
    rollback:          promote(the deployment that served before the current one, from history)

A canary tries a deployment on part of the traffic first: the gateway sends `percent` percent
of the environment's requests to it (once it has a ready replica) and the rest to the serving
deployment. A full promotion ends any canary; promoting the canary itself completes it.

    start_canary(B, 10):  env.deployment = A, env.canary = (B, 10%)   (A serves 90%, B 10%)
    promote(B):           env.canary = None, then promote(A -> B) as above
    end_canary, rollback: env.canary = None                          (A serves all; B retired unless used)

A canary and a pending promotion never coexist: a canary is refused while another deployment is
pending, and a full promotion clears the canary before it places its deployment.

Every function runs inside the caller's store transaction and takes `now`.
"""

from __future__ import annotations

import re

from slipway.errors import ConflictError, NotFoundError, SpecError
from slipway.store import DeploymentRow, EnvironmentRow, ModelRow, Transaction


# A canary's share of the environment's requests, in percent: some traffic to each side.
MIN_CANARY_PERCENT = 1
MAX_CANARY_PERCENT = 99


def initial_replicas(spec: dict) -> int:
    """Replicas a deployment starts with (and comes back with): its min_replica, at least 1."""
    return max(int(spec.get("autoscaling", {}).get("min_replica", 1)), 1)


def get_environment(tx: Transaction, model: ModelRow, name: str) -> EnvironmentRow:
    environment = tx.environments.get(model.id, name)
    if environment is None:
        raise NotFoundError(
            f"model {model.name!r} has no environment {name!r}; create it with "
            f"POST /api/v1/models/{model.name}/environments or use production or development"
        )
    return environment


def place(tx: Transaction, environment: EnvironmentRow, deployment: DeploymentRow, now: float) -> EnvironmentRow:
    """Make `deployment` the environment's: at once if nothing ready serves it, else once it is ready."""
    if environment.deployment_id == deployment.id:
        if environment.pending_deployment_id is not None:
            abandoned = environment.pending_deployment_id
            environment = tx.environments.set_pending(environment.id, None, now)
            retire_if_unused(tx, abandoned, now)
        return environment
    current = tx.deployments.get(environment.deployment_id) if environment.deployment_id else None
    if current is None or current.status != "active" or deployment.status == "active":
        return _switch(tx, environment, deployment.id, now)
    abandoned = environment.pending_deployment_id
    environment = tx.environments.set_pending(environment.id, deployment.id, now)
    if abandoned and abandoned != deployment.id:
        retire_if_unused(tx, abandoned, now)
    return environment


def promote(tx: Transaction, model: ModelRow, environment_name: str, deployment: DeploymentRow,
            now: float) -> EnvironmentRow:
    """Point the model's environment at `deployment`, bringing it back if it was inactive.

    Ends the environment's canary: promoting the canary deployment completes it, promoting any
    other deployment calls it off (the old canary retires unless used elsewhere).
    """
    environment = get_environment(tx, model, environment_name)
    _check_model(model, deployment)
    deployment = _ensure_running(tx, deployment, now)
    canary = environment.canary_deployment_id
    if canary is not None:
        environment = tx.environments.set_canary(environment.id, None, None, now)
    environment = place(tx, environment, deployment, now)
    if canary is not None and canary != deployment.id:
        retire_if_unused(tx, canary, now)
    return environment


def start_canary(tx: Transaction, model: ModelRow, environment_name: str, deployment: DeploymentRow,
                 percent: int, now: float) -> EnvironmentRow:
    """Send `percent` percent of the environment's requests to `deployment`; the serving one keeps the rest.

    Replaces an earlier canary (which retires unless used elsewhere) or changes the share of the
    same one. A full promotion of `deployment` still waiting to take over becomes this canary.
    """
    environment = get_environment(tx, model, environment_name)
    _check_model(model, deployment)
    where = f"environment {environment.name!r} of model {model.name!r}"
    if not MIN_CANARY_PERCENT <= percent <= MAX_CANARY_PERCENT:
        raise SpecError(f"canary_percent must be between {MIN_CANARY_PERCENT} and {MAX_CANARY_PERCENT}, "
                        f"got {percent}; promote without it to send all traffic", code="invalid_request")
    if environment.deployment_id == deployment.id:
        raise ConflictError(f"deployment {deployment.id} (#{deployment.number}) already serves {where}; "
                            "a canary is another deployment: promote a different one with canary_percent")
    if environment.deployment_id is None:
        raise ConflictError(f"{where} has no deployment yet to share its traffic with a canary; promote "
                            f"deployment #{deployment.number} without canary_percent")
    pending = environment.pending_deployment_id
    if pending is not None and pending != deployment.id:
        raise ConflictError(f"{where} is switching to deployment {pending}; wait until it serves, or call the "
                            "switch off with rollback, before starting a canary")
    deployment = _ensure_running(tx, deployment, now)
    if pending == deployment.id:
        environment = tx.environments.set_pending(environment.id, None, now)
    replaced = environment.canary_deployment_id
    environment = tx.environments.set_canary(environment.id, deployment.id, percent, now)
    if replaced is not None and replaced != deployment.id:
        retire_if_unused(tx, replaced, now)
    return environment


def end_canary(tx: Transaction, model: ModelRow, environment_name: str, now: float) -> tuple[EnvironmentRow, str]:
    """Send all the environment's traffic back to its deployment; returns (environment, the ended canary's id)."""
    environment = get_environment(tx, model, environment_name)
    canary = environment.canary_deployment_id
    if canary is None:
        raise NotFoundError(f"environment {environment.name!r} of model {model.name!r} has no canary; start one "
                            f"with POST /api/v1/models/{model.name}/environments/{environment.name}/promote and "
                            "canary_percent")
    environment = tx.environments.set_canary(environment.id, None, None, now)
    retire_if_unused(tx, canary, now)
    return environment, canary


def rollback(tx: Transaction, model: ModelRow, environment_name: str, now: float) -> tuple[EnvironmentRow, str]:
    """Re-promote the deployment that served before the current one; returns (environment, its id).

    A promotion still waiting for its deployment, or a canary, is simply called off: the current
    one keeps serving all the traffic.
    """
    environment = get_environment(tx, model, environment_name)
    called_off = [d for d in (environment.pending_deployment_id, environment.canary_deployment_id) if d]
    if called_off:
        environment = tx.environments.set_pending(environment.id, None, now)
        environment = tx.environments.set_canary(environment.id, None, None, now)
        for abandoned in called_off:
            retire_if_unused(tx, abandoned, now)
        if environment.deployment_id is not None:
            return environment, environment.deployment_id
    for entry in tx.environments.history(environment.id):
        if entry.deployment_id == environment.deployment_id:
            continue
        previous = tx.deployments.get(entry.deployment_id)
        if previous is None or previous.status == "failed":
            continue
        previous = _ensure_running(tx, previous, now)
        return place(tx, environment, previous, now), previous.id
    raise ConflictError(
        f"environment {environment_name!r} of model {model.name!r} has no earlier deployment to roll back to; "
        "promote a deployment by number or id instead"
    )


def resolve_pending(tx: Transaction, now: float) -> bool:
    """Finish or call off waiting promotions; True if any environment changed."""
    changed = False
    for environment in tx.environments.list_pending():
        pending = tx.deployments.get(environment.pending_deployment_id)
        if pending is None or pending.status in ("failed", "inactive"):
            tx.environments.set_pending(environment.id, None, now)
            changed = True
            continue
        current = tx.deployments.get(environment.deployment_id) if environment.deployment_id else None
        if pending.status == "active" or current is None or current.status != "active":
            _switch(tx, environment, pending.id, now)
            changed = True
    return changed


def retire_if_unused(tx: Transaction, deployment_id: str, now: float) -> bool:
    """Make a running deployment inactive (no replicas) if no environment serves, awaits or tries it."""
    if tx.environments.referencing(deployment_id):
        return False
    deployment = tx.deployments.get(deployment_id)
    if deployment is None or deployment.status not in ("deploying", "active"):
        return False
    tx.deployments.update(deployment_id, now, status="inactive", desired_replicas=0,
                          status_detail="retired: no environment uses it any more")
    return True


def _switch(tx: Transaction, environment: EnvironmentRow, deployment_id: str, now: float) -> EnvironmentRow:
    replaced = {environment.deployment_id, environment.pending_deployment_id} - {None, deployment_id}
    environment = tx.environments.set_serving(environment.id, deployment_id, now)
    for old in replaced:
        retire_if_unused(tx, old, now)
    return environment


def _check_model(model: ModelRow, deployment: DeploymentRow) -> None:
    if deployment.model_id != model.id:
        raise NotFoundError(f"deployment {deployment.id} is not a deployment of model {model.name!r}; "
                            f"promote one of GET /api/v1/models/{model.name}")


def _ensure_running(tx: Transaction, deployment: DeploymentRow, now: float) -> DeploymentRow:
    if deployment.status == "failed":
        raise ConflictError(
            f"deployment {deployment.id} (#{deployment.number}) failed and cannot serve: "
            f"{_summary(deployment.status_detail)}; fix the package and deploy it again"
        )
    if deployment.status == "inactive":
        return tx.deployments.update(deployment.id, now, status="deploying", status_detail="",
                                     desired_replicas=initial_replicas(deployment.spec))
    return deployment


def _summary(text: str) -> str:
    """The line of a failure report that names the exception (else its first line), for one-line errors."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    named = [line for line in lines if re.search(r"\b\w*(Error|Exception)\b:", line)]
    return (named[-1] if named else lines[0] if lines else "see `slipway logs`")[:300]
