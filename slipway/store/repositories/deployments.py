"""Deployments: one immutable package snapshot of a model, numbered 1, 2, ... per model.

Status moves deploying -> active (a replica is ready) or failed (load() raised); a deployment
nobody needs any more becomes inactive. `desired_replicas` is what the control loop runs.
"""

from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import func, insert, select, update

from slipway.store.repositories.base import Repository, new_id
from slipway.store.rows import DEPLOYMENT_STATUSES, RUNNING_STATUSES, DeploymentRow
from slipway.store.tables import deployments, models

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
