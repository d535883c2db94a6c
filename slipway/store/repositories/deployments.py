"""Deployments: one immutable package snapshot of a model, numbered 1, 2, ... per model.

Status moves deploying -> active (a replica is ready) or failed (load() raised); a deployment
nobody needs any more becomes inactive. `desired_replicas` is what the control loop runs.

Prices (`pricing`, a small JSON object or null) are read and written on their own, by the
management API only: the control loop never needs them, so `DeploymentRow` leaves them out.
"""

from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import func, insert, null, or_, select, update

from slipway.store.repositories.base import Repository, new_id
from slipway.store.rows import DEPLOYMENT_STATUSES, RUNNING_STATUSES, DeploymentRow
from slipway.store.tables import deployments, environments, models

_DEPLOYMENT_ID_BYTES = 4  # 'dep-' + 8 hex characters

_COLUMNS = (*deployments.c, models.c.workspace_id, models.c.name.label("model_name"))


def _row(r) -> DeploymentRow:
    return DeploymentRow(
        id=r.id, model_id=r.model_id, workspace_id=r.workspace_id, model_name=r.model_name, number=r.number,
        status=r.status, status_detail=r.status_detail, spec=dict(r.spec), package_dir=r.package_dir,
        package_sha256=r.package_sha256, desired_replicas=r.desired_replicas, created_at=r.created_at,
        updated_at=r.updated_at,
    )


def _select():
    return select(*_COLUMNS).join(models, models.c.id == deployments.c.model_id)


class DeploymentRepository(Repository):
    def next_number(self, model_id: str) -> int:
        with self._scope() as conn:
            highest = conn.execute(select(func.max(deployments.c.number))
                                   .where(deployments.c.model_id == model_id)).scalar()
        return (highest or 0) + 1

    def create(self, *, model_id: str, number: int, spec: dict[str, Any], package_dir: str,
               package_sha256: str, desired_replicas: int, now: float, status: str = "deploying") -> DeploymentRow:
        deployment_id = new_id("dep", _DEPLOYMENT_ID_BYTES)
        with self._scope() as conn:
            conn.execute(insert(deployments).values(
                id=deployment_id, model_id=model_id, number=number, status=status, status_detail="",
                spec=spec, package_dir=package_dir, package_sha256=package_sha256,
                desired_replicas=desired_replicas, created_at=now, updated_at=now,
            ))
            return _row(conn.execute(_select().where(deployments.c.id == deployment_id)).one())

    def get(self, deployment_id: str, *, workspace_id: str | None = None) -> DeploymentRow | None:
        """The deployment; None if it does not exist or belongs to another workspace."""
        query = _select().where(deployments.c.id == deployment_id)
        if workspace_id is not None:
            query = query.where(models.c.workspace_id == workspace_id)
        with self._scope() as conn:
            r = conn.execute(query).first()
        return _row(r) if r else None

    def get_by_number(self, model_id: str, number: int) -> DeploymentRow | None:
        with self._scope() as conn:
            r = conn.execute(_select().where(deployments.c.model_id == model_id,
                                             deployments.c.number == number)).first()
        return _row(r) if r else None

    def list_for_model(self, model_id: str) -> list[DeploymentRow]:
        with self._scope() as conn:
            rows = conn.execute(_select().where(deployments.c.model_id == model_id)
                                .order_by(deployments.c.number)).all()
        return [_row(r) for r in rows]

    def list(self, *, statuses: Sequence[str] | None = None, ids: Sequence[str] | None = None) -> list[DeploymentRow]:
        """Deployments of every workspace, filtered by status and/or id, oldest first."""
        query = _select().order_by(deployments.c.created_at, deployments.c.id)
        if statuses is not None:
            query = query.where(deployments.c.status.in_(list(statuses)))
        if ids is not None:
            query = query.where(deployments.c.id.in_(list(ids)))
        with self._scope() as conn:
            rows = conn.execute(query).all()
        return [_row(r) for r in rows]

    def list_for_workspace(self, workspace_id: str) -> list[DeploymentRow]:
        """Every deployment of the workspace, by model name then number."""
        with self._scope() as conn:
            rows = conn.execute(_select().where(models.c.workspace_id == workspace_id)
                                .order_by(models.c.name, deployments.c.number)).all()
        return [_row(r) for r in rows]

    def environments_of_workspace(self, workspace_id: str) -> dict[str, list[tuple[str, bool]]]:
        """deployment id -> [(environment name, pending)] for each environment served by (pending False)
        or waiting for (pending True) that deployment, in the environments' creation order."""
        query = (select(environments.c.name, environments.c.deployment_id, environments.c.pending_deployment_id)
                 .join(models, models.c.id == environments.c.model_id)
                 .where(models.c.workspace_id == workspace_id,
                        or_(environments.c.deployment_id.is_not(None),
                            environments.c.pending_deployment_id.is_not(None)))
                 .order_by(environments.c.id))
        with self._scope() as conn:
            rows = conn.execute(query).all()
        found: dict[str, list[tuple[str, bool]]] = {}
        for name, serving, pending in rows:
            if serving:
                found.setdefault(serving, []).append((name, False))
            if pending:
                found.setdefault(pending, []).append((name, True))
        return found

    def pricing(self, deployment_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """deployment id -> its prices; deployments without prices are left out."""
        if not deployment_ids:
            return {}
        with self._scope() as conn:
            rows = conn.execute(select(deployments.c.id, deployments.c.pricing).where(
                deployments.c.id.in_(list(deployment_ids)), deployments.c.pricing.is_not(None))).all()
        return {deployment_id: dict(prices) for deployment_id, prices in rows if prices}

    def set_pricing(self, deployment_id: str, pricing: dict[str, Any] | None, now: float) -> bool:
        """Replace the deployment's prices (None or {} removes them); False if there is no such deployment.

        No prices is SQL NULL, not JSON null, so "has prices" is a plain IS NOT NULL.
        """
        with self._scope() as conn:
            result = conn.execute(update(deployments).where(deployments.c.id == deployment_id)
                                  .values(pricing=pricing or null(), updated_at=now))
        return result.rowcount > 0

    def list_running(self) -> list[DeploymentRow]:
        """Deployments whose replicas should be running (deploying or active)."""
        return self.list(statuses=RUNNING_STATUSES)

    def update(self, deployment_id: str, now: float, *, status: str | None = None,
               status_detail: str | None = None, desired_replicas: int | None = None,
               spec: dict[str, Any] | None = None) -> DeploymentRow | None:
        """Change the given fields (others stay); None if there is no such deployment."""
        values: dict[str, Any] = {"updated_at": now}
        if status is not None:
            if status not in DEPLOYMENT_STATUSES:
                raise ValueError(f"unknown deployment status {status!r}; one of {DEPLOYMENT_STATUSES}")
            values["status"] = status
        if status_detail is not None:
            values["status_detail"] = status_detail
        if desired_replicas is not None:
            values["desired_replicas"] = max(0, desired_replicas)
        if spec is not None:
            values["spec"] = spec
        with self._scope() as conn:
            conn.execute(update(deployments).where(deployments.c.id == deployment_id).values(**values))
            r = conn.execute(_select().where(deployments.c.id == deployment_id)).first()
        return _row(r) if r else None
