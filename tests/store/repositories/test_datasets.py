"""Dataset rows: created with a known id, listed newest first per workspace, deleted."""

from __future__ import annotations

import pytest


def _create(store, workspace_id, name="support", now=1.0, **fields):
    values = dict(source="upload", content_hash="ab" * 32, train_rows=9, validation_rows=1,
                  path=f"/datasets/{name}", now=now)
    values.update(fields)
    return store.datasets.create(workspace_id, name=name, **values)


def test_create_get_and_list_newest_first(store, workspace):
    dataset_id = store.datasets.new_id()
    first = _create(store, workspace.id, now=1.0, dataset_id=dataset_id)
    second = _create(store, workspace.id, name="from-traces", now=2.0, source="traces",
                     filters={"model": "bot", "min_feedback_score": 0.5})
    assert first.id == dataset_id and dataset_id.startswith("ds-")
    assert store.datasets.get(workspace.id, second.id) == second
    assert second.filters == {"model": "bot", "min_feedback_score": 0.5}
    assert [d.id for d in store.datasets.list(workspace.id)] == [second.id, first.id]
    assert [d.id for d in store.datasets.list(workspace.id, after=second.id)] == [first.id]
    assert [d.id for d in store.datasets.list(workspace.id, name="support")] == [first.id]


def test_unknown_source_is_refused(store, workspace):
    with pytest.raises(ValueError, match="unknown dataset source"):
        _create(store, workspace.id, source="scraped")


def test_delete_returns_the_row_once(store, workspace):
    row = _create(store, workspace.id)
    assert store.datasets.delete(workspace.id, row.id) == row
    assert store.datasets.delete(workspace.id, row.id) is None
    assert store.datasets.list(workspace.id) == []


def test_a_workspace_never_sees_another_workspaces_datasets(store, workspace):
    other = store.workspaces.create("team-b", 1.0)
    row = _create(store, workspace.id)
    assert store.datasets.get(other.id, row.id) is None
    assert store.datasets.list(other.id) == []
    assert store.datasets.delete(other.id, row.id) is None
    assert store.datasets.get(workspace.id, row.id) == row
