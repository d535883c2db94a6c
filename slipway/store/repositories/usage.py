"""Usage: one row per request, inserted idempotently, aggregated in SQL.

`insert_many` is how the gateway's journal lands here: a record whose request_id is already
stored is skipped, so replaying a journal after a crash never double-counts. `aggregate` groups
by any combination of model, key and UTC day over a time range, with the same SQL on SQLite and
Postgres. `billable_units` is the same grouping split further by deployment (each deployment has
its own prices), and `recent_errors` lists one deployment's failed requests, newest first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import and_, case, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from slipway.spec.usage import UsageRecord
from slipway.store.repositories.base import Repository
from slipway.store.rows import UsageTotals
from slipway.store.tables import traces, usage

GROUPS = ("model", "key", "day")
_GROUP_COLUMNS = {"model": usage.c.model_name, "key": usage.c.key_id, "day": usage.c.day}
SECONDS_PER_DAY = 86_400
# Rows per INSERT statement; keeps statements under every driver's parameter limit.
_BATCH = 500
# Most groups one aggregation returns.
MAX_GROUPS = 10_000


@dataclass(frozen=True)
class BillableUnits:
    """Successful requests (status < 400) of one usage group at one deployment."""

    groups: tuple[Any, ...]
    """The group's values in the order grouped by (a day as 'YYYY-MM-DD'), as `aggregate` gives them."""
    deployment_id: str | None
    requests: int
    input_units: int
    output_units: int


@dataclass(frozen=True)
class FailedRequest:
    """One request answered with an error status, and what its captured trace said, if any."""

    request_id: str
    created_at: float
    status_code: int
    route: str
    key_id: str | None
    latency_ms: float
    response: Any
    """The captured response body (the error) when the request was traced; None otherwise."""


def day_number(unix_seconds: float) -> int:
    return int(unix_seconds // SECONDS_PER_DAY)


def day_label(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


class UsageRepository(Repository):
    def insert_many(self, records: Sequence[UsageRecord]) -> int:
        """Insert the records whose request_id is new; returns how many were new. Safe from any thread."""
        unique = list({r.request_id: r for r in records}.values())
        inserted = 0
        with self._scope() as conn:
            dialect = conn.dialect.name
            for start in range(0, len(unique), _BATCH):
                batch = unique[start:start + _BATCH]
                known = {rid for (rid,) in conn.execute(select(usage.c.request_id).where(
                    usage.c.request_id.in_([r.request_id for r in batch]))).all()}
                rows = [_values(r) for r in batch if r.request_id not in known]
                if not rows:
                    continue
                conn.execute(_insert_ignoring_duplicates(dialect), rows)
                inserted += len(rows)
        return inserted

    def aggregate(self, workspace_id: str, *, group_by: Sequence[str] = (), start: float | None = None,
                  end: float | None = None) -> list[UsageTotals]:
        """Totals for the workspace in [start, end), grouped by any of 'model', 'key', 'day'."""
        groups = _groups(group_by)
        columns = [_GROUP_COLUMNS[g].label(g) for g in groups]
        query = select(
            *columns,
            func.count().label("requests"),
            func.coalesce(func.sum(usage.c.input_units), 0).label("input_units"),
            func.coalesce(func.sum(usage.c.output_units), 0).label("output_units"),
            func.coalesce(func.sum(case((usage.c.status_code >= 400, 1), else_=0)), 0).label("errors"),
            func.coalesce(func.avg(usage.c.latency_ms), 0.0).label("avg_latency_ms"),
        ).where(_in_range(workspace_id, start, end))
        if groups:
            group_columns = [_GROUP_COLUMNS[g] for g in groups]
            query = query.group_by(*group_columns).order_by(*group_columns)
        with self._scope() as conn:
            rows = conn.execute(query.limit(MAX_GROUPS)).all()
        totals = []
        for r in rows:
            if not groups and r.requests == 0:
                continue
            totals.append(UsageTotals(
                requests=int(r.requests), input_units=int(r.input_units), output_units=int(r.output_units),
                errors=int(r.errors), avg_latency_ms=round(float(r.avg_latency_ms), 3),
                model=r.model if "model" in groups else None,
                key_id=r.key if "key" in groups else None,
                day=day_label(r.day) if "day" in groups else None,
            ))
        return totals

    def billable_units(self, workspace_id: str, *, group_by: Sequence[str] = (), start: float | None = None,
                       end: float | None = None) -> list[BillableUnits]:
        """Successful requests and their units per (group, deployment) in [start, end).

        Grouped like `aggregate`, then by deployment, so each part can be priced at its own
        deployment's prices. Requests answered with status >= 400 are left out: they cost nothing.
        """
        groups = _groups(group_by)
        query = select(
            *[_GROUP_COLUMNS[g].label(g) for g in groups], usage.c.deployment_id,
            func.count().label("requests"),
            func.coalesce(func.sum(usage.c.input_units), 0).label("input_units"),
            func.coalesce(func.sum(usage.c.output_units), 0).label("output_units"),
        ).where(_in_range(workspace_id, start, end), usage.c.status_code < 400)
        query = query.group_by(*[_GROUP_COLUMNS[g] for g in groups], usage.c.deployment_id)
        with self._scope() as conn:
            rows = conn.execute(query.limit(MAX_GROUPS)).all()
        return [BillableUnits(
            groups=tuple(day_label(getattr(r, g)) if g == "day" else getattr(r, g) for g in groups),
            deployment_id=r.deployment_id, requests=int(r.requests), input_units=int(r.input_units),
            output_units=int(r.output_units)) for r in rows]

    def recent_errors(self, workspace_id: str, deployment_id: str, *, min_status: int = 500,
                      limit: int = 20) -> list[FailedRequest]:
        """The deployment's requests answered with status >= `min_status`, newest first, each with
        its captured trace's response when there is one."""
        query = (select(usage.c.request_id, usage.c.created_at, usage.c.status_code, usage.c.route,
                        usage.c.key_id, usage.c.latency_ms, traces.c.response)
                 .outerjoin(traces, and_(traces.c.id == usage.c.request_id,
                                         traces.c.workspace_id == usage.c.workspace_id))
                 .where(usage.c.workspace_id == workspace_id, usage.c.deployment_id == deployment_id,
                        usage.c.status_code >= min_status)
                 .order_by(usage.c.created_at.desc(), usage.c.id.desc())
                 .limit(limit))
        with self._scope() as conn:
            rows = conn.execute(query).all()
        return [FailedRequest(request_id=r.request_id, created_at=r.created_at, status_code=r.status_code,
                              route=r.route, key_id=r.key_id, latency_ms=r.latency_ms, response=r.response)
                for r in rows]


def _groups(group_by: Sequence[str]) -> list[str]:
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown:
        raise ValueError(f"cannot group usage by {unknown}; use any of {', '.join(GROUPS)}")
    return list(dict.fromkeys(group_by))


def _in_range(workspace_id: str, start: float | None, end: float | None):
    condition = usage.c.workspace_id == workspace_id
    if start is not None:
        condition = and_(condition, usage.c.created_at >= start)
    if end is not None:
        condition = and_(condition, usage.c.created_at < end)
    return condition


def _values(record: UsageRecord) -> dict:
    return {**record.model_dump(), "day": day_number(record.created_at)}


def _insert_ignoring_duplicates(dialect: str):
    """INSERT that skips rows whose request_id another writer stored a moment ago."""
    if dialect == "postgresql":
        return postgresql.insert(usage).on_conflict_do_nothing(index_elements=["request_id"])
    if dialect == "sqlite":
        return sqlite.insert(usage).on_conflict_do_nothing(index_elements=["request_id"])
    return insert(usage)
