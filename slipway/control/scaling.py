"""A deployment's replica count and autoscaling settings, and deactivating it.

These change desired state only; the control loop makes the replicas follow on its next tick.
Autoscaling settings live in the deployment's stored spec (the package folder never changes).
An explicit replica count is stored as fixed-size autoscaling (min_replica = max_replica), so the
autoscaler and a restart both keep it; see `slipway.control.autoscaler`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from slipway.control.promotion import initial_replicas
from slipway.errors import ConflictError, SpecError
from slipway.spec.package import Autoscaling
from slipway.store import DeploymentRow, Transaction


def scale(tx: Transaction, deployment: DeploymentRow, replicas: int, now: float, *, max_replicas: int) -> DeploymentRow:
    """Set the replica count now and keep it: an explicit count is fixed-size autoscaling.

    N >= 1 sets min_replica = max_replica = N, so the autoscaler leaves the count alone until the
    autoscaling settings are changed again; 0 sets min_replica 0 (max_replica kept), so the
    deployment sleeps until a request arrives for it. An inactive deployment comes back when
    scaled above 0.
    """
    if not 0 <= replicas <= max_replicas:
        raise SpecError(f"replicas must be between 0 and {max_replicas}, got {replicas}", code="invalid_request")
    _refuse_failed(deployment, "scale")
    current = dict(deployment.spec.get("autoscaling") or {})
    bounds = {"min_replica": replicas, "max_replica": replicas} if replicas > 0 else {"min_replica": 0}
    fixed = Autoscaling.model_validate({**current, **bounds}).model_dump(mode="json")
    status = "deploying" if deployment.status == "inactive" and replicas > 0 else None
    return tx.deployments.update(deployment.id, now, desired_replicas=replicas, status=status,
                                 status_detail="" if status else None, spec={**deployment.spec, "autoscaling": fixed})


def set_autoscaling(tx: Transaction, deployment: DeploymentRow, changes: dict[str, Any], now: float) -> DeploymentRow:
    """Merge `changes` into the deployment's autoscaling settings, validate, and keep replicas within bounds."""
    current = dict(deployment.spec.get("autoscaling") or {})
    try:
        merged = Autoscaling.model_validate({**current, **changes})
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'autoscaling'}: "
                    f"{str(e['msg']).removeprefix('Value error, ')}" for e in exc.errors()]
        raise SpecError("invalid autoscaling settings", problems, code="invalid_request") from None
    spec = {**deployment.spec, "autoscaling": merged.model_dump(mode="json")}
    desired = deployment.desired_replicas
    if deployment.status in ("deploying", "active"):
        desired = min(max(desired, merged.min_replica), merged.max_replica)
    return tx.deployments.update(deployment.id, now, spec=spec, desired_replicas=desired)


def deactivate(tx: Transaction, deployment: DeploymentRow, now: float) -> DeploymentRow:
    """Stop serving: status inactive, no replicas. Environments keep pointing at it until promoted away."""
    for environment in tx.environments.referencing(deployment.id):
        if environment.pending_deployment_id == deployment.id:
            tx.environments.set_pending(environment.id, None, now)
    if deployment.status == "inactive":
        return deployment
    return tx.deployments.update(deployment.id, now, status="inactive", desired_replicas=0,
                                 status_detail="deactivated" if deployment.status != "failed"
                                 else deployment.status_detail)


def reactivate(tx: Transaction, deployment: DeploymentRow, now: float) -> DeploymentRow:
    """Bring an inactive deployment back with its initial replica count."""
    _refuse_failed(deployment, "activate")
    if deployment.status != "inactive":
        return deployment
    return tx.deployments.update(deployment.id, now, status="deploying", status_detail="",
                                 desired_replicas=initial_replicas(deployment.spec))


def _refuse_failed(deployment: DeploymentRow, action: str) -> None:
    if deployment.status == "failed":
        raise ConflictError(f"cannot {action} deployment {deployment.id}: it failed to load; fix the package "
                            "and deploy it again (slipway logs shows why)")
