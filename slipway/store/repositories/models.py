"""Models: a name within a workspace that deployments and environments hang off."""

from __future__ import annotations

from sqlalchemy import insert, select

from slipway.store.repositories.base import Repository, new_id
from slipway.store.rows import ModelRow
from slipway.store.tables import environments, models

# Every model has these environments from the start.
STANDARD_ENVIRONMENTS = ("production", "development")


def _row(r) -> ModelRow:
    return ModelRow(id=r.id, workspace_id=r.workspace_id, name=r.name, created_at=r.created_at)


class ModelRepository(Repository):
    def ensure(self, workspace_id: str, name: str, now: float) -> ModelRow:
        """The model named `name`, created with its standard environments if it is new."""
        with self._scope() as conn:
            r = conn.execute(select(models).where(models.c.workspace_id == workspace_id,
                                                  models.c.name == name)).first()
            if r:
                return _row(r)
            row = ModelRow(id=new_id("mdl"), workspace_id=workspace_id, name=name, created_at=now)
            conn.execute(insert(models).values(id=row.id, workspace_id=workspace_id, name=name, created_at=now))
            for env in STANDARD_ENVIRONMENTS:
                conn.execute(insert(environments).values(model_id=row.id, name=env, created_at=now, updated_at=now))
        return row

    def get(self, workspace_id: str, name: str) -> ModelRow | None:
        with self._scope() as conn:
            r = conn.execute(select(models).where(models.c.workspace_id == workspace_id,
                                                  models.c.name == name)).first()
        return _row(r) if r else None

    def get_by_id(self, model_id: str) -> ModelRow | None:
        with self._scope() as conn:
            r = conn.execute(select(models).where(models.c.id == model_id)).first()
        return _row(r) if r else None

    def list(self, workspace_id: str | None = None) -> list[ModelRow]:
        """The workspace's models by name; every workspace's when `workspace_id` is None."""
        query = select(models).order_by(models.c.workspace_id, models.c.name)
        if workspace_id is not None:
            query = query.where(models.c.workspace_id == workspace_id)
        with self._scope() as conn:
            rows = conn.execute(query).all()
        return [_row(r) for r in rows]
