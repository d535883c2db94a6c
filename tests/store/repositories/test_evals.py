"""Eval suites, runs and results: unique suite names, run transitions, idempotent results, workspace walls."""

from __future__ import annotations

import pytest

from slipway.errors import ConflictError
from slipway.store import EvalResultRecord

SUMMARY = {"n": 3, "mean_score": 0.67, "mean_ci": [0.1, 1.0], "pass_rate": 0.67, "pass_rate_ci": [0.2, 0.94]}


@pytest.fixture
def suite(store, workspace):
    return store.evals.create_suite(workspace.id, name="support", definition={"graders": [{"type": "exact"}]},
                                    items_path="/suites/support/items.jsonl", items_hash="cd" * 32, num_items=3,
                                    now=1.0)


def test_suite_names_are_unique_per_workspace(store, workspace, suite):
    assert store.evals.get_suite_by_name(workspace.id, "support") == suite
    with pytest.raises(ConflictError, match="exists already"):
        store.evals.create_suite(workspace.id, name="support", definition={}, items_path="/x", items_hash="0" * 64,
                                 num_items=0, now=2.0)
    other = store.workspaces.create("team-b", 1.0)
    store.evals.create_suite(other.id, name="support", definition={}, items_path="/x", items_hash="0" * 64,
                             num_items=0, now=2.0)
    assert [s.id for s in store.evals.list_suites(workspace.id)] == [suite.id]


def test_run_lifecycle_with_summary(store, workspace, suite):
    run = store.evals.create_run(workspace.id, suite_id=suite.id, target_kind="checkpoint", target="ftckpt-1",
                                 now=5.0)
    assert (run.status, run.target_kind, run.target) == ("queued", "checkpoint", "ftckpt-1")
    assert store.evals.transition_run(run.id, "running", 6.0, pid=77).started_at == 6.0
    done = store.evals.transition_run(run.id, "succeeded", 9.0, summary=SUMMARY)
    assert (done.status, done.summary, done.finished_at, done.pid) == ("succeeded", SUMMARY, 9.0, None)
    assert store.evals.transition_run(run.id, "failed", 10.0) is None
    assert store.evals.list_unfinished_runs() == []
    with pytest.raises(ValueError, match="unknown eval target kind"):
        store.evals.create_run(workspace.id, suite_id=suite.id, target_kind="vibes", target="x", now=1.0)


def test_results_are_stored_once_and_listed_in_item_order(store, workspace, suite):
    run = store.evals.create_run(workspace.id, suite_id=suite.id, target_kind="environment",
                                 target="bot@production", now=5.0)
    results = [EvalResultRecord(item_index=i, sample={"output": str(i)}, score=i / 2, passed=i > 0,
                                rationale="r") for i in (2, 0, 1)]
    assert store.evals.add_results(run.id, results[:2]) == 2
    assert store.evals.add_results(run.id, results) == 1
    listed = store.evals.list_results(workspace.id, run.id)
    assert [(r.item_index, r.score, r.passed) for r in listed] == [(0, 0.0, False), (1, 0.5, True), (2, 1.0, True)]
    assert [r.item_index for r in store.evals.list_results(workspace.id, run.id, failed_only=True)] == [0]
    assert [r.item_index for r in store.evals.list_results(workspace.id, run.id, after_index=0, limit=1)] == [1]


def test_runs_list_newest_first_per_suite_and_suite_delete_cascades(store, workspace, suite):
    runs = [store.evals.create_run(workspace.id, suite_id=suite.id, target_kind="deployment", target="dep-1",
                                   now=float(t)) for t in range(3)]
    store.evals.add_results(runs[0].id, [EvalResultRecord(item_index=0, sample={}, score=1.0, passed=True)])
    assert [r.id for r in store.evals.list_runs(workspace.id, suite_id=suite.id)] == [r.id for r in runs[::-1]]
    assert store.evals.delete_suite(workspace.id, suite.id) is True
    assert store.evals.list_runs(workspace.id) == []
    assert store.evals.list_results(workspace.id, runs[0].id) == []


def test_a_workspace_never_sees_another_workspaces_evals(store, workspace, suite):
    other = store.workspaces.create("team-b", 1.0)
    run = store.evals.create_run(workspace.id, suite_id=suite.id, target_kind="deployment", target="dep-1", now=1.0)
    store.evals.add_results(run.id, [EvalResultRecord(item_index=0, sample={}, score=1.0, passed=True)])
    assert store.evals.get_suite(other.id, suite.id) is None
    assert store.evals.get_suite_by_name(other.id, "support") is None
    assert store.evals.list_suites(other.id) == []
    assert store.evals.get_run(other.id, run.id) is None
    assert store.evals.list_runs(other.id) == []
    assert store.evals.list_results(other.id, run.id) == []
    assert store.evals.delete_suite(other.id, suite.id) is False
