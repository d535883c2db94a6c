"""Eval suites, runs of a suite against a target, and each item's result.

A suite row points at its items file on disk (with the file's hash and item count) and keeps
the suite definition (graders, settings) as JSON. A run evaluates one target:

    target_kind   target
    environment   "support-bot@production"   what a model name resolves to through the gateway
    deployment    "dep-3f9a1c2b"
    checkpoint    "ftckpt-..."                a fine-tuning checkpoint's adapter

Runs move queued -> running -> succeeded | failed | cancelled (a compare-and-set like
fine-tuning jobs). `summary` holds what `slipway.evals.summary` computes: mean score and pass
rate, each with its 95% confidence interval. Results are keyed by (run, item index), so a run
that is restarted and writes an item again does not duplicate it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from slipway.errors import ConflictError
from slipway.store.repositories.base import Repository, new_id
from slipway.store.repositories.paging import newest_first
from slipway.store.tables import eval_results, eval_runs, eval_suites

TargetKind = Literal["environment", "deployment", "checkpoint"]
TARGET_KINDS: tuple[str, ...] = ("environment", "deployment", "checkpoint")
RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
RUN_STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED_RUN_STATUSES: tuple[str, ...] = ("succeeded", "failed", "cancelled")
UNFINISHED_RUN_STATUSES: tuple[str, ...] = ("queued", "running")
MAX_RESULTS_PAGE = 1000
_UNSET: Any = object()


@dataclass(frozen=True)
class EvalSuiteRow:
    id: str
    workspace_id: str
    name: str
    definition: dict[str, Any]
    items_path: str
    items_hash: str
    num_items: int
    created_at: float


@dataclass(frozen=True)
class EvalRunRow:
    id: str
    workspace_id: str
    suite_id: str
    target_kind: str
    target: str
    status: str
    summary: dict[str, Any] | None
    error: dict[str, Any] | None
    job_dir: str | None
    pid: int | None
    created_at: float
    started_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class EvalResultRecord:
    """How one item of a run did."""

    item_index: int
    sample: dict[str, Any]
    """What was asked and answered, e.g. {"input": ..., "output": ..., "ideal": ...}."""
    score: float
    passed: bool
    rationale: str = ""


@dataclass(frozen=True)
class EvalResultRow(EvalResultRecord):
    run_id: str = ""


def _suite(r) -> EvalSuiteRow:
    return EvalSuiteRow(id=r.id, workspace_id=r.workspace_id, name=r.name, definition=dict(r.definition),
                        items_path=r.items_path, items_hash=r.items_hash, num_items=r.num_items,
                        created_at=r.created_at)


def _run(r) -> EvalRunRow:
    return EvalRunRow(id=r.id, workspace_id=r.workspace_id, suite_id=r.suite_id, target_kind=r.target_kind,
                      target=r.target, status=r.status, summary=r.summary, error=r.error, job_dir=r.job_dir,
                      pid=r.pid, created_at=r.created_at, started_at=r.started_at, finished_at=r.finished_at)


class EvalRepository(Repository):
    # ---- suites --------------------------------------------------------------------------------

    def create_suite(self, workspace_id: str, *, name: str, definition: dict[str, Any], items_path: str,
                     items_hash: str, num_items: int, now: float) -> EvalSuiteRow:
        """A new suite; `ConflictError` if the workspace has one by that name."""
        row = EvalSuiteRow(id=new_id("suite"), workspace_id=workspace_id, name=name, definition=definition,
                           items_path=items_path, items_hash=items_hash, num_items=num_items, created_at=now)
        with self._scope() as conn:
            try:
                with conn.begin_nested():
                    conn.execute(insert(eval_suites).values(**row.__dict__))
            except IntegrityError:
                raise ConflictError(f"eval suite {name!r} exists already; pick another name or delete it first") \
                    from None
        return row

    def get_suite(self, workspace_id: str, suite_id: str) -> EvalSuiteRow | None:
        with self._scope() as conn:
            r = conn.execute(select(eval_suites).where(eval_suites.c.workspace_id == workspace_id,
                                                       eval_suites.c.id == suite_id)).first()
        return _suite(r) if r else None

    def get_suite_by_name(self, workspace_id: str, name: str) -> EvalSuiteRow | None:
        with self._scope() as conn:
            r = conn.execute(select(eval_suites).where(eval_suites.c.workspace_id == workspace_id,
                                                       eval_suites.c.name == name)).first()
        return _suite(r) if r else None

    def list_suites(self, workspace_id: str, *, limit: int = 100, after: str | None = None) -> list[EvalSuiteRow]:
        query = select(eval_suites).where(eval_suites.c.workspace_id == workspace_id)
        with self._scope() as conn:
            rows = newest_first(conn, query, eval_suites, workspace_id=workspace_id, after=after, limit=limit)
        return [_suite(r) for r in rows]

    def delete_suite(self, workspace_id: str, suite_id: str) -> bool:
        """Delete the suite with its runs and results; False if it was not there."""
        with self._scope() as conn:
            result = conn.execute(delete(eval_suites).where(eval_suites.c.workspace_id == workspace_id,
                                                            eval_suites.c.id == suite_id))
        return bool(result.rowcount)

    # ---- runs ----------------------------------------------------------------------------------

    def create_run(self, workspace_id: str, *, suite_id: str, target_kind: TargetKind, target: str,
                   now: float, job_dir: str | None = None) -> EvalRunRow:
        if target_kind not in TARGET_KINDS:
            raise ValueError(f"unknown eval target kind {target_kind!r}; one of {TARGET_KINDS}")
        run_id = new_id("evalrun", 12)
        with self._scope() as conn:
            conn.execute(insert(eval_runs).values(
                id=run_id, workspace_id=workspace_id, suite_id=suite_id, target_kind=target_kind, target=target,
                status="queued", job_dir=job_dir, created_at=now))
            return _run(conn.execute(select(eval_runs).where(eval_runs.c.id == run_id)).one())

    def get_run(self, workspace_id: str, run_id: str) -> EvalRunRow | None:
        with self._scope() as conn:
            r = conn.execute(select(eval_runs).where(eval_runs.c.workspace_id == workspace_id,
                                                     eval_runs.c.id == run_id)).first()
        return _run(r) if r else None

    def list_runs(self, workspace_id: str, *, suite_id: str | None = None, limit: int = 20,
                  after: str | None = None) -> list[EvalRunRow]:
        """The workspace's runs (of one suite, if given), newest first."""
        query = select(eval_runs).where(eval_runs.c.workspace_id == workspace_id)
        if suite_id is not None:
            query = query.where(eval_runs.c.suite_id == suite_id)
        with self._scope() as conn:
            rows = newest_first(conn, query, eval_runs, workspace_id=workspace_id, after=after, limit=limit)
        return [_run(r) for r in rows]

    def list_unfinished_runs(self) -> list[EvalRunRow]:
        """Runs of every workspace that are queued or running, oldest first (for the control loop)."""
        with self._scope() as conn:
            rows = conn.execute(select(eval_runs).where(eval_runs.c.status.in_(UNFINISHED_RUN_STATUSES))
                                .order_by(eval_runs.c.created_at, eval_runs.c.id)).all()
        return [_run(r) for r in rows]

    def transition_run(self, run_id: str, status: RunStatus, now: float, *,
                       expected: Sequence[str] = UNFINISHED_RUN_STATUSES, summary: dict[str, Any] | None = _UNSET,
                       error: dict[str, Any] | None = _UNSET, pid: int | None = _UNSET) -> EvalRunRow | None:
        """Move the run to `status` if it is in one of `expected`; None when it was not."""
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown eval run status {status!r}; one of {RUN_STATUSES}")
        if any(s in FINISHED_RUN_STATUSES for s in expected):
            raise ValueError(f"a finished run never changes status; expected must be among {UNFINISHED_RUN_STATUSES}")
        values: dict[str, Any] = {"status": status}
        if status == "running":
            values["started_at"] = func.coalesce(eval_runs.c.started_at, now)
        if status in FINISHED_RUN_STATUSES:
            values.update(finished_at=now, pid=None)
        for name, value in (("summary", summary), ("error", error), ("pid", pid)):
            if value is not _UNSET:
                values[name] = value
        with self._scope() as conn:
            result = conn.execute(update(eval_runs).where(eval_runs.c.id == run_id,
                                                          eval_runs.c.status.in_(list(expected))).values(**values))
            if result.rowcount == 0:
                return None
            return _run(conn.execute(select(eval_runs).where(eval_runs.c.id == run_id)).one())

    # ---- results -------------------------------------------------------------------------------

    def add_results(self, run_id: str, results: Sequence[EvalResultRecord]) -> int:
        """Store results for items the run has none for yet; returns how many were new."""
        with self._scope() as conn:
            known = {i for (i,) in conn.execute(select(eval_results.c.item_index).where(
                eval_results.c.run_id == run_id, eval_results.c.item_index.in_([r.item_index for r in results])))}
            fresh = {r.item_index: r for r in results if r.item_index not in known}
            if fresh:
                conn.execute(insert(eval_results), [
                    {"run_id": run_id, "item_index": r.item_index, "sample": r.sample, "score": float(r.score),
                     "passed": bool(r.passed), "rationale": r.rationale} for r in fresh.values()])
        return len(fresh)

    def list_results(self, workspace_id: str, run_id: str, *, after_index: int = -1,
                     limit: int = 100, failed_only: bool = False) -> list[EvalResultRow]:
        """A run's results in item order, from the item after `after_index` on."""
        query = (select(eval_results).join(eval_runs, eval_runs.c.id == eval_results.c.run_id)
                 .where(eval_runs.c.workspace_id == workspace_id, eval_results.c.run_id == run_id,
                        eval_results.c.item_index > after_index))
        if failed_only:
            query = query.where(eval_results.c.passed.is_(False))
        query = query.order_by(eval_results.c.item_index).limit(max(1, min(limit, MAX_RESULTS_PAGE)))
        with self._scope() as conn:
            rows = conn.execute(query).all()
        return [EvalResultRow(run_id=r.run_id, item_index=r.item_index, sample=r.sample, score=r.score,
                              passed=bool(r.passed), rationale=r.rationale) for r in rows]
