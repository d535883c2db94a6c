"""Usage: one row per request, inserted idempotently, aggregated in SQL.

`insert_many` is how the gateway's journal lands here: a record whose request_id is already
stored is skipped, so replaying a journal after a crash never double-counts. `aggregate` groups
by any combination of model, key and UTC day over a time range, with the same SQL on SQLite and
Postgres.
"""

from __future__ import annotations

import datetime as dt
from typing import Sequence

from sqlalchemy import case, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from slipway.spec.usage import UsageRecord
from slipway.store.repositories.base import Repository
from slipway.store.rows import UsageTotals
from slipway.store.tables import usage

GROUPS = ("model", "key", "day")
_GROUP_COLUMNS = {"model": usage.c.model_name, "key": usage.c.key_id, "day": usage.c.day}
SECONDS_PER_DAY = 86_400
# Rows per INSERT statement; keeps statements under every driver's parameter limit.
_BATCH = 500
# Most groups one aggregation returns.
MAX_GROUPS = 10_000


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
        unknown = [g for g in group_by if g not in GROUPS]
        if unknown:
            raise ValueError(f"cannot group usage by {unknown}; use any of {', '.join(GROUPS)}")
        groups = list(dict.fromkeys(group_by))
        columns = [_GROUP_COLUMNS[g].label(g) for g in groups]
        query = select(
            *columns,
            func.count().label("requests"),
            func.coalesce(func.sum(usage.c.input_units), 0).label("input_units"),
            func.coalesce(func.sum(usage.c.output_units), 0).label("output_units"),
            func.coalesce(func.sum(case((usage.c.status_code >= 400, 1), else_=0)), 0).label("errors"),
            func.coalesce(func.avg(usage.c.latency_ms), 0.0).label("avg_latency_ms"),
        ).where(usage.c.workspace_id == workspace_id)
        if start is not None:
            query = query.where(usage.c.created_at >= start)
        if end is not None:
            query = query.where(usage.c.created_at < end)
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


def _values(record: UsageRecord) -> dict:
    return {**record.model_dump(), "day": day_number(record.created_at)}


def _insert_ignoring_duplicates(dialect: str):
    """INSERT that skips rows whose request_id another writer stored a moment ago."""
    if dialect == "postgresql":
        return postgresql.insert(usage).on_conflict_do_nothing(index_elements=["request_id"])
    if dialect == "sqlite":
        return sqlite.insert(usage).on_conflict_do_nothing(index_elements=["request_id"])
    return insert(usage)
