"""Models are unique per workspace and come with production and development environments."""

from __future__ import annotations

from slipway.store import STANDARD_ENVIRONMENTS


def test_ensure_creates_once_with_standard_environments(store, workspace):
    first = store.models.ensure(workspace.id, "echo", 1.0)
    again = store.models.ensure(workspace.id, "echo", 2.0)
    assert first == again
    assert [e.name for e in store.environments.list(first.id)] == list(STANDARD_ENVIRONMENTS)


def test_same_name_in_two_workspaces_is_two_models(store, workspace):
    other = store.workspaces.create("team-b", 1.0)
    mine = store.models.ensure(workspace.id, "echo", 1.0)
    theirs = store.models.ensure(other.id, "echo", 1.0)
    assert mine.id != theirs.id
    assert [m.id for m in store.models.list(workspace.id)] == [mine.id]
    assert store.models.get(other.id, "echo") == theirs
    assert len(store.models.list()) == 2
