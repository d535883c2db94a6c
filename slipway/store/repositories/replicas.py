"""Replicas: the last thing the backend reported about each replica process.

`sync` writes one control-loop observation: new replicas are inserted, changed ones updated,
and ones the backend no longer reports are kept as `stopped` for their logs. A `failed` replica
stays failed (also when it is later reported stopped), so a failed deployment still shows why. Only the most recent gone replicas of each
deployment are kept.
"""

from __future__ import annotations

import logging
from typing import Sequence

from sqlalchemy import delete, func, insert, or_, select, update

from slipway.spec.replica import ReplicaObservation, ReplicaState
from slipway.store.repositories.base import Repository
from slipway.store.rows import ReplicaRow
from slipway.store.tables import deployments, replicas

log = logging.getLogger(__name__)

LIVE_STATES = (ReplicaState.STARTING.value, ReplicaState.READY.value, ReplicaState.DRAINING.value)
# Gone replicas (stopped, crashed, failed) kept per deployment, newest first, for `logs`.
GONE_REPLICAS_KEPT = 20
DETAIL_LIMIT = 16_000

_TRACKED = ("state", "url", "pid", "exit_code", "detail", "started_at")


def _row(r) -> ReplicaRow:
    return ReplicaRow(id=r.id, deployment_id=r.deployment_id, state=r.state, url=r.url, pid=r.pid,
                      restarts=r.restarts, exit_code=r.exit_code, detail=r.detail, started_at=r.started_at,
                      updated_at=r.updated_at)


def _values(obs: ReplicaObservation) -> dict:
    return {"state": obs.state.value, "url": obs.url, "pid": obs.pid, "exit_code": obs.exit_code,
            "detail": obs.detail[-DETAIL_LIMIT:], "started_at": obs.started_at}


class ReplicaRepository(Repository):
    def sync(self, observed: Sequence[ReplicaObservation], now: float) -> bool:
        """Make the rows match what the backend reports now; True if any row changed."""
        changed = False
        with self._scope() as conn:
            # Only rows that can change: the ones reported now, and ones last seen alive.
            observed_ids = [obs.replica_id for obs in observed]
            existing = {r.id: r for r in conn.execute(select(replicas).where(or_(
                replicas.c.id.in_(observed_ids),
                replicas.c.state.in_(LIVE_STATES + (ReplicaState.CRASHED.value,)),
            ))).all()}
            known_deployments = {d for (d,) in conn.execute(select(deployments.c.id).where(
                deployments.c.id.in_({obs.deployment_id for obs in observed}))).all()}
            seen: set[str] = set()
            touched_deployments: set[str] = set()
            for obs in observed:
                if obs.deployment_id not in known_deployments:
                    log.warning("replica %s belongs to unknown deployment %s; not recorded",
                                obs.replica_id, obs.deployment_id)
                    continue
                seen.add(obs.replica_id)
                values = _values(obs)
                row = existing.get(obs.replica_id)
                if row is not None and row.state == ReplicaState.FAILED.value and obs.state == ReplicaState.STOPPED:
                    continue  # stopping a replica whose load failed must not hide why it failed
                if row is None:
                    conn.execute(insert(replicas).values(id=obs.replica_id, deployment_id=obs.deployment_id,
                                                         restarts=0, updated_at=now, **values))
                    changed = True
                elif any(getattr(row, name) != values[name] for name in _TRACKED):
                    restarted = row.started_at and values["started_at"] and row.started_at != values["started_at"]
                    conn.execute(update(replicas).where(replicas.c.id == row.id).values(
                        restarts=row.restarts + (1 if restarted else 0), updated_at=now, **values))
                    changed = True
            for row in existing.values():
                if row.id in seen or row.state not in LIVE_STATES + (ReplicaState.CRASHED.value,):
                    continue
                conn.execute(update(replicas).where(replicas.c.id == row.id).values(
                    state=ReplicaState.STOPPED.value, updated_at=now))
                touched_deployments.add(row.deployment_id)
                changed = True
            for deployment_id in touched_deployments:
                self._prune(conn, deployment_id)
        return changed

    @staticmethod
    def _prune(conn, deployment_id: str) -> None:
        gone = [r.id for r in conn.execute(
            select(replicas.c.id).where(replicas.c.deployment_id == deployment_id,
                                        replicas.c.state.not_in(LIVE_STATES))
            .order_by(replicas.c.updated_at.desc(), replicas.c.id.desc())).all()]
        if len(gone) > GONE_REPLICAS_KEPT:
            conn.execute(delete(replicas).where(replicas.c.id.in_(gone[GONE_REPLICAS_KEPT:])))

    def list(self, deployment_id: str, *, include_stopped: bool = False) -> list[ReplicaRow]:
        """The deployment's replicas, most recently started first; stopped ones only when asked."""
        query = select(replicas).where(replicas.c.deployment_id == deployment_id)
        if not include_stopped:
            query = query.where(replicas.c.state != ReplicaState.STOPPED.value)
        with self._scope() as conn:
            rows = conn.execute(query.order_by(replicas.c.started_at.desc(), replicas.c.id)).all()
        return [_row(r) for r in rows]

    def list_for_deployments(self, deployment_ids: Sequence[str]) -> list[ReplicaRow]:
        """Every replica row (stopped ones too) of the given deployments, by deployment then start."""
        if not deployment_ids:
            return []
        with self._scope() as conn:
            rows = conn.execute(select(replicas).where(replicas.c.deployment_id.in_(list(deployment_ids)))
                                .order_by(replicas.c.deployment_id, replicas.c.started_at, replicas.c.id)).all()
        return [_row(r) for r in rows]

    def ready_counts(self, deployment_ids: Sequence[str]) -> dict[str, int]:
        """Ready replicas per deployment (deployments with none are left out)."""
        with self._scope() as conn:
            rows = conn.execute(select(replicas.c.deployment_id, func.count()).where(
                replicas.c.deployment_id.in_(list(deployment_ids)), replicas.c.state == ReplicaState.READY.value)
                .group_by(replicas.c.deployment_id)).all()
        return {deployment_id: int(count) for deployment_id, count in rows}

    def list_live(self) -> list[ReplicaRow]:
        """Replicas of every deployment that are starting, ready or draining."""
        with self._scope() as conn:
            rows = conn.execute(select(replicas).where(replicas.c.state.in_(LIVE_STATES))
                                .order_by(replicas.c.deployment_id, replicas.c.started_at, replicas.c.id)).all()
        return [_row(r) for r in rows]
