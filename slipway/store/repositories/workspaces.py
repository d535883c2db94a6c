"""Workspaces: the unit of isolation. Every key, model and usage row belongs to one."""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from slipway.errors import ConflictError
from slipway.store.repositories.base import Repository, new_id
from slipway.store.rows import WorkspaceRow
from slipway.store.tables import workspaces


def _row(r) -> WorkspaceRow:
    return WorkspaceRow(id=r.id, name=r.name, created_at=r.created_at)


class WorkspaceRepository(Repository):
    def create(self, name: str, now: float) -> WorkspaceRow:
        """A new workspace; `ConflictError` if the name is taken."""
        row = WorkspaceRow(id=new_id("ws"), name=name, created_at=now)
        with self._scope() as conn:
            if conn.execute(select(workspaces.c.id).where(workspaces.c.name == name)).first():
                raise ConflictError(f"workspace {name!r} exists already; pick another name")
            try:
                with conn.begin_nested():
                    conn.execute(insert(workspaces).values(id=row.id, name=name, created_at=now))
            except IntegrityError:
                raise ConflictError(f"workspace {name!r} exists already; pick another name") from None
        return row

    def get(self, workspace_id: str) -> WorkspaceRow | None:
        with self._scope() as conn:
            r = conn.execute(select(workspaces).where(workspaces.c.id == workspace_id)).first()
        return _row(r) if r else None

    def get_by_name(self, name: str) -> WorkspaceRow | None:
        with self._scope() as conn:
            r = conn.execute(select(workspaces).where(workspaces.c.name == name)).first()
        return _row(r) if r else None

    def list(self) -> list[WorkspaceRow]:
        with self._scope() as conn:
            rows = conn.execute(select(workspaces).order_by(workspaces.c.created_at, workspaces.c.id)).all()
        return [_row(r) for r in rows]
