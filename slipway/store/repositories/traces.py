"""Traces: captured request/response pairs, the feedback people give them, and their retention.

The gateway hands over `TraceRecord`s in batches (`insert_many`); the id is the request id, so
replaying a capture journal after a crash stores nothing twice. Listing pages newest first by
(created_at, id) and filters in SQL on the same terms on SQLite and Postgres:

    TraceFilter(model="support-bot", environment="production", since=t0, until=t1,
                tags=("billing",), min_feedback_score=0.5)

`tags` matches traces that carry every tag given. `min_feedback_score` keeps traces scored at
least that high, and also traces with a corrected output: someone wrote the right answer, which
is the strongest feedback there is (the same rule `slipway.train.datasets.rows_from_traces` uses).
A dataset built from traces stores its filter as `TraceFilter.as_dict()`, so it can be rebuilt.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import and_, cast, delete, exists, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from slipway.store.repositories.base import Repository
from slipway.store.repositories.paging import newest_first
from slipway.store.tables import traces

# Rows per INSERT statement; keeps statements under every driver's parameter limit.
_BATCH = 200
MAX_TAGS = 32


@dataclass(frozen=True)
class TraceRecord:
    """One captured call, as the gateway writes it."""

    id: str
    workspace_id: str
    model: str
    request: dict[str, Any]
    response: dict[str, Any] | None
    created_at: float
    environment: str | None = None
    deployment_id: str | None = None
    status_code: int = 200
    latency_ms: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class TraceRow(TraceRecord):
    """A stored trace with its feedback (all None until someone gives some)."""

    feedback_score: float | None = None
    feedback_label: str | None = None
    corrected_output: str | None = None
    feedback_at: float | None = None

    def training_source(self) -> dict[str, Any]:
        """The dict `slipway.train.datasets.rows_from_traces` reads a trace from."""
        return {"request": self.request, "response": self.response, "corrected_output": self.corrected_output,
                "feedback_score": self.feedback_score}


@dataclass(frozen=True)
class TraceFilter:
    """Which traces to list; every field left None (or empty) matches everything."""

    model: str | None = None
    environment: str | None = None
    since: float | None = None
    """Created at or after this Unix time."""
    until: float | None = None
    """Created before this Unix time."""
    tags: tuple[str, ...] = field(default=())
    """Traces carrying every one of these tags."""
    min_feedback_score: float | None = None
    """Scored at least this high, or given a corrected output."""
    has_feedback: bool | None = None
    """True: only traces with a score, label or corrected output; False: only traces without."""

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if k == "tags" else v) for k, v in asdict(self).items()
                if v is not None and v != ()}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TraceFilter:
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown trace filter field(s) {sorted(unknown)}; "
                             f"use any of {', '.join(cls.__dataclass_fields__)}")
        if "tags" in data:
            data["tags"] = tuple(data["tags"])
        return cls(**data)


def _row(r) -> TraceRow:
    return TraceRow(
        id=r.id, workspace_id=r.workspace_id, model=r.model, request=r.request, response=r.response,
        created_at=r.created_at, environment=r.environment, deployment_id=r.deployment_id,
        status_code=r.status_code, latency_ms=r.latency_ms, prompt_tokens=r.prompt_tokens,
        completion_tokens=r.completion_tokens, tags=tuple(r.tags or ()), feedback_score=r.feedback_score,
        feedback_label=r.feedback_label, corrected_output=r.corrected_output, feedback_at=r.feedback_at,
    )


def _values(record: TraceRecord) -> dict[str, Any]:
    return {
        "id": record.id, "workspace_id": record.workspace_id, "model": record.model, "request": record.request,
        "response": record.response, "created_at": record.created_at, "environment": record.environment,
        "deployment_id": record.deployment_id, "status_code": record.status_code,
        "latency_ms": record.latency_ms, "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens, "tags": list(record.tags),
    }


class TraceRepository(Repository):
    def insert_many(self, records: Sequence[TraceRecord]) -> int:
        """Store the records whose id is new; returns how many were inserted."""
        inserted = 0
        with self._scope() as conn:
            dialect = conn.dialect.name
            for start in range(0, len(records), _BATCH):
                batch = {r.id: r for r in records[start:start + _BATCH]}
                known = {tid for (tid,) in conn.execute(select(traces.c.id).where(traces.c.id.in_(list(batch))))}
                rows = [_values(r) for tid, r in batch.items() if tid not in known]
                if rows:
                    conn.execute(_insert_ignoring_duplicates(dialect), rows)
                    inserted += len(rows)
        return inserted

    def get(self, workspace_id: str, trace_id: str) -> TraceRow | None:
        with self._scope() as conn:
            r = conn.execute(select(traces).where(traces.c.workspace_id == workspace_id,
                                                  traces.c.id == trace_id)).first()
        return _row(r) if r else None

    def list(self, workspace_id: str, where: TraceFilter = TraceFilter(), *, limit: int = 100,
             after: str | None = None) -> list[TraceRow]:
        """Up to `limit` matching traces, newest first; `after` (a trace id) continues a listing past it."""
        with self._scope() as conn:
            query = select(traces).where(*self._conditions(conn.dialect.name, workspace_id, where))
            rows = newest_first(conn, query, traces, workspace_id=workspace_id, after=after, limit=limit)
        return [_row(r) for r in rows]

    def iterate(self, workspace_id: str, where: TraceFilter = TraceFilter(), *,
                batch_size: int = 500) -> Iterator[TraceRow]:
        """Every matching trace, oldest first, read in batches (each its own short transaction)."""
        position: tuple[float, str] | None = None
        while True:
            with self._scope() as conn:
                query = select(traces).where(*self._conditions(conn.dialect.name, workspace_id, where))
                if position is not None:
                    query = query.where(or_(traces.c.created_at > position[0],
                                            and_(traces.c.created_at == position[0], traces.c.id > position[1])))
                rows = conn.execute(query.order_by(traces.c.created_at, traces.c.id).limit(batch_size)).all()
            yield from (_row(r) for r in rows)
            if len(rows) < batch_size:
                return
            position = (rows[-1].created_at, rows[-1].id)

    def count(self, workspace_id: str, where: TraceFilter = TraceFilter()) -> int:
        with self._scope() as conn:
            query = select(func.count()).select_from(traces).where(
                *self._conditions(conn.dialect.name, workspace_id, where))
            return int(conn.execute(query).scalar() or 0)

    def set_feedback(self, workspace_id: str, trace_id: str, now: float, *, score: float | None = None,
                     label: str | None = None, corrected_output: str | None = None) -> TraceRow | None:
        """Record feedback on a trace (fields left None keep their value); None if no such trace."""
        values: dict[str, Any] = {"feedback_at": now}
        if score is not None:
            values["feedback_score"] = float(score)
        if label is not None:
            values["feedback_label"] = label
        if corrected_output is not None:
            values["corrected_output"] = corrected_output
        with self._scope() as conn:
            result = conn.execute(update(traces).where(traces.c.workspace_id == workspace_id,
                                                       traces.c.id == trace_id).values(**values))
            if result.rowcount == 0:
                return None
            return _row(conn.execute(select(traces).where(traces.c.id == trace_id)).one())

    def delete_older_than(self, cutoff: float, *, workspace_id: str | None = None) -> int:
        """Delete traces created before `cutoff` (Unix time: now - retention), of one workspace or all."""
        query = delete(traces).where(traces.c.created_at < cutoff)
        if workspace_id is not None:
            query = query.where(traces.c.workspace_id == workspace_id)
        with self._scope() as conn:
            return int(conn.execute(query).rowcount or 0)

    @staticmethod
    def _conditions(dialect: str, workspace_id: str, where: TraceFilter) -> list:
        conditions = [traces.c.workspace_id == workspace_id]
        if where.model is not None:
            conditions.append(traces.c.model == where.model)
        if where.environment is not None:
            conditions.append(traces.c.environment == where.environment)
        if where.since is not None:
            conditions.append(traces.c.created_at >= where.since)
        if where.until is not None:
            conditions.append(traces.c.created_at < where.until)
        if len(where.tags) > MAX_TAGS:
            raise ValueError(f"at most {MAX_TAGS} tags per filter, got {len(where.tags)}")
        conditions += [_has_tag(dialect, tag) for tag in dict.fromkeys(where.tags)]
        corrected = and_(traces.c.corrected_output.is_not(None), traces.c.corrected_output != "")
        if where.min_feedback_score is not None:
            conditions.append(or_(traces.c.feedback_score >= where.min_feedback_score, corrected))
        if where.has_feedback is not None:
            given = or_(traces.c.feedback_score.is_not(None), traces.c.feedback_label.is_not(None), corrected)
            conditions.append(given if where.has_feedback else ~given)
        return conditions


def _has_tag(dialect: str, tag: str):
    """The trace's JSON list of tags contains `tag`; each database has its own JSON operators."""
    if dialect == "postgresql":
        return cast(traces.c.tags, postgresql.JSONB).contains([tag])
    if dialect == "sqlite":
        elements = func.json_each(traces.c.tags).table_valued("value")
        return exists(select(1).select_from(elements).where(elements.c.value == tag))
    raise NotImplementedError(f"tag filters are not written for {dialect}; use SQLite or PostgreSQL")


def _insert_ignoring_duplicates(dialect: str):
    """INSERT that skips traces another writer stored a moment ago."""
    if dialect == "postgresql":
        return postgresql.insert(traces).on_conflict_do_nothing(index_elements=["id"])
    if dialect == "sqlite":
        return sqlite.insert(traces).on_conflict_do_nothing(index_elements=["id"])
    return insert(traces)
