"""Environments: a named pointer from a model to the deployment serving it (production, development, ...).

An environment has the deployment serving it now and, while a promotion waits for its
deployment to become ready, a pending one; it may also have a canary, a deployment that gets a
percentage of its requests before a full promotion. Every change of the serving deployment is
written to environment_history, which is what rollback reads.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, or_, select, update

from slipway.store.repositories.base import Repository
from slipway.store.rows import EnvironmentRow, HistoryRow
from slipway.store.tables import environment_history, environments, models

# History rows kept per environment; older ones are pruned on each promotion.
HISTORY_LIMIT = 100


def _row(r) -> EnvironmentRow:
    return EnvironmentRow(id=r.id, model_id=r.model_id, name=r.name, deployment_id=r.deployment_id,
                          pending_deployment_id=r.pending_deployment_id, created_at=r.created_at,
                          updated_at=r.updated_at, capture=bool(r.capture),
                          canary_deployment_id=r.canary_deployment_id, canary_percent=r.canary_percent)


class EnvironmentRepository(Repository):
    def ensure(self, model_id: str, name: str, now: float) -> EnvironmentRow:
        """The model's environment `name`, created empty if it does not exist."""
        with self._scope() as conn:
            r = conn.execute(select(environments).where(environments.c.model_id == model_id,
                                                        environments.c.name == name)).first()
            if r is None:
                conn.execute(insert(environments).values(model_id=model_id, name=name, created_at=now,
                                                         updated_at=now))
                r = conn.execute(select(environments).where(environments.c.model_id == model_id,
                                                            environments.c.name == name)).one()
        return _row(r)

    def get(self, model_id: str, name: str) -> EnvironmentRow | None:
        with self._scope() as conn:
            r = conn.execute(select(environments).where(environments.c.model_id == model_id,
                                                        environments.c.name == name)).first()
        return _row(r) if r else None

    def list(self, model_id: str | None = None) -> list[EnvironmentRow]:
        """The model's environments in creation order (production, development, then custom ones)."""
        query = select(environments).order_by(environments.c.model_id, environments.c.id)
        if model_id is not None:
            query = query.where(environments.c.model_id == model_id)
        with self._scope() as conn:
            rows = conn.execute(query).all()
        return [_row(r) for r in rows]

    def list_pending(self) -> list[EnvironmentRow]:
        """Environments waiting for a promoted deployment to become ready."""
        with self._scope() as conn:
            rows = conn.execute(select(environments).where(environments.c.pending_deployment_id.is_not(None))
                                .order_by(environments.c.id)).all()
        return [_row(r) for r in rows]

    def referencing(self, deployment_id: str) -> list[EnvironmentRow]:
        """Environments served by, waiting for, or trying out (as their canary) this deployment."""
        with self._scope() as conn:
            rows = conn.execute(select(environments).where(or_(
                environments.c.deployment_id == deployment_id,
                environments.c.pending_deployment_id == deployment_id,
                environments.c.canary_deployment_id == deployment_id,
            )).order_by(environments.c.id)).all()
        return [_row(r) for r in rows]

    def canaries_of_workspace(self, workspace_id: str) -> dict[str, list[tuple[str, int]]]:
        """deployment id -> [(environment name, percent)] for each environment it is the canary of."""
        query = (select(environments.c.name, environments.c.canary_deployment_id, environments.c.canary_percent)
                 .join(models, models.c.id == environments.c.model_id)
                 .where(models.c.workspace_id == workspace_id, environments.c.canary_deployment_id.is_not(None))
                 .order_by(environments.c.id))
        with self._scope() as conn:
            rows = conn.execute(query).all()
        found: dict[str, list[tuple[str, int]]] = {}
        for name, deployment_id, percent in rows:
            found.setdefault(deployment_id, []).append((name, int(percent or 0)))
        return found

    def set_serving(self, environment_id: int, deployment_id: str, now: float) -> EnvironmentRow:
        """Point the environment at `deployment_id` now, clear any pending promotion, record history."""
        with self._scope() as conn:
            conn.execute(update(environments).where(environments.c.id == environment_id).values(
                deployment_id=deployment_id, pending_deployment_id=None, updated_at=now))
            conn.execute(insert(environment_history).values(
                environment_id=environment_id, deployment_id=deployment_id, promoted_at=now))
            keep = (select(environment_history.c.id).where(environment_history.c.environment_id == environment_id)
                    .order_by(environment_history.c.promoted_at.desc(), environment_history.c.id.desc())
                    .limit(HISTORY_LIMIT))
            conn.execute(delete(environment_history).where(
                environment_history.c.environment_id == environment_id,
                environment_history.c.id.not_in(keep)))
            return _row(conn.execute(select(environments).where(environments.c.id == environment_id)).one())

    def set_pending(self, environment_id: int, deployment_id: str | None, now: float) -> EnvironmentRow:
        """Set (or with None, clear) the deployment waiting to take over this environment."""
        with self._scope() as conn:
            conn.execute(update(environments).where(environments.c.id == environment_id).values(
                pending_deployment_id=deployment_id, updated_at=now))
            return _row(conn.execute(select(environments).where(environments.c.id == environment_id)).one())

    def set_canary(self, environment_id: int, deployment_id: str | None, percent: int | None,
                   now: float) -> EnvironmentRow:
        """Send `percent` percent of the environment's requests to `deployment_id`; (None, None) ends the canary."""
        if (deployment_id is None) != (percent is None):
            raise ValueError("a canary needs both a deployment and a percent, or neither")
        with self._scope() as conn:
            conn.execute(update(environments).where(environments.c.id == environment_id).values(
                canary_deployment_id=deployment_id, canary_percent=percent, updated_at=now))
            return _row(conn.execute(select(environments).where(environments.c.id == environment_id)).one())

    def set_capture(self, environment_id: int, capture: bool, now: float) -> EnvironmentRow:
        """Turn trace capture of the environment's traffic on or off."""
        with self._scope() as conn:
            conn.execute(update(environments).where(environments.c.id == environment_id).values(
                capture=capture, updated_at=now))
            return _row(conn.execute(select(environments).where(environments.c.id == environment_id)).one())

    def history(self, environment_id: int, *, limit: int = HISTORY_LIMIT) -> list[HistoryRow]:
        """Deployments that served the environment, newest first."""
        with self._scope() as conn:
            rows = conn.execute(select(environment_history).where(
                environment_history.c.environment_id == environment_id)
                .order_by(environment_history.c.promoted_at.desc(), environment_history.c.id.desc())
                .limit(limit)).all()
        return [HistoryRow(environment_id=r.environment_id, deployment_id=r.deployment_id,
                           promoted_at=r.promoted_at) for r in rows]
