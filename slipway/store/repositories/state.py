"""The state version: one counter, bumped by every change a gateway must hear about."""

from __future__ import annotations

from sqlalchemy import select, update

from slipway.store.repositories.base import Repository
from slipway.store.tables import state_version


class StateRepository(Repository):
    def version(self) -> int:
        with self._scope() as conn:
            return int(conn.execute(select(state_version.c.version).where(state_version.c.id == 1)).scalar_one())

    def bump(self) -> int:
        """Add one to the version and return the new value."""
        with self._scope() as conn:
            conn.execute(update(state_version).where(state_version.c.id == 1)
                         .values(version=state_version.c.version + 1))
            return int(conn.execute(select(state_version.c.version).where(state_version.c.id == 1)).scalar_one())
