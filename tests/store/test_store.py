"""Store.open on each database: SQLite settings, transactions that commit or roll back as a whole."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from slipway.errors import ConflictError
from slipway.store import DATABASE_FILE, Store, StoreError


def test_sqlite_lives_under_home_in_wal_mode_with_foreign_keys(tmp_path):
    store = Store.open(None, tmp_path / "home")
    try:
        assert (tmp_path / "home" / DATABASE_FILE).is_file()
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    finally:
        store.close()


def test_transaction_rolls_back_everything_when_it_raises(store):
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            workspace = tx.workspaces.create("team", 1.0)
            tx.models.ensure(workspace.id, "echo", 1.0)
            raise RuntimeError("boom")
    assert store.workspaces.get_by_name("team") is None
    assert store.models.list() == []


def test_transaction_commits_all_calls_together(store):
    with store.transaction() as tx:
        workspace = tx.workspaces.create("team", 1.0)
        model = tx.models.ensure(workspace.id, "echo", 1.0)
        tx.state.bump()
    assert store.models.get(workspace.id, "echo") == model
    assert store.state.version() == 1


def test_foreign_keys_are_enforced(store):
    with pytest.raises(sa.exc.IntegrityError):
        store.models.ensure("ws-does-not-exist", "echo", 1.0)


def test_workspace_names_are_unique(store):
    store.workspaces.create("team", 1.0)
    with pytest.raises(ConflictError, match="exists already"):
        store.workspaces.create("team", 2.0)


def test_concurrent_writers_from_threads_all_land(store):
    """Writers in several threads neither fail with 'database is locked' nor lose updates."""
    errors: list[BaseException] = []

    def bump_many() -> None:
        try:
            for _ in range(20):
                store.state.bump()
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=bump_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert store.state.version() == 80


def test_unreachable_database_says_what_to_check(tmp_path):
    with pytest.raises(StoreError, match="SLIPWAY_DATABASE_URL") as info:
        Store.open("postgresql+psycopg://nobody:secret@127.0.0.1:1/none?connect_timeout=2", tmp_path)
    assert "secret" not in info.value.message
