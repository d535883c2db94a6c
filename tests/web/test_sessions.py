"""DashboardSessions over a real SQLite store, with a clock the tests move."""

from __future__ import annotations

import pytest

from slipway.control.auth import Principal
from slipway.store import Store
from slipway.web.sessions import DashboardSessions, SessionConfig


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path):
    store = Store.open(None, tmp_path)
    yield store
    store.close()


def principal_of(store: Store, workspace: str = "team-a") -> Principal:
    workspace_row = store.workspaces.create(workspace, now=1.0)
    key, _secret = store.keys.create(workspace_row.id, name="admin", scopes=["admin"], models=None, now=1.0)
    return Principal(key_id=key.id, workspace_id=workspace_row.id, scopes=frozenset(key.scopes), models=None)


def test_a_session_maps_an_opaque_id_to_the_principal(store):
    sessions = DashboardSessions(store)
    principal = principal_of(store)
    session_id = sessions.open(principal)
    assert len(session_id) >= 43 and principal.key_id not in session_id
    assert sessions.principal(session_id) == principal
    assert sessions.principal("not-a-session") is None
    sessions.close(session_id)
    assert sessions.principal(session_id) is None


def test_idle_and_old_sessions_expire(store):
    clock = Clock()
    sessions = DashboardSessions(store, SessionConfig(idle_timeout_seconds=60, max_age_seconds=150), clock=clock)
    principal = principal_of(store)
    session_id = sessions.open(principal)
    for _ in range(2):  # used every 50 s: never idle for 60 s
        clock.now += 50
        assert sessions.principal(session_id) == principal
    clock.now += 61
    assert sessions.principal(session_id) is None, "idle past the timeout"

    busy = sessions.open(principal)
    for _ in range(3):
        clock.now += 50
        assert sessions.principal(busy) == principal
    clock.now += 1
    assert sessions.principal(busy) is None, "older than max_age however busy"


def test_the_table_is_bounded_least_recently_used_first(store):
    sessions = DashboardSessions(store, SessionConfig(max_sessions=2))
    principal = principal_of(store)
    first, second = sessions.open(principal), sessions.open(principal)
    assert sessions.principal(first) == principal  # first is now the most recently used
    third = sessions.open(principal)
    assert len(sessions) == 2
    assert sessions.principal(second) is None
    assert sessions.principal(first) == principal and sessions.principal(third) == principal


def test_revoking_the_key_ends_its_sessions(store):
    sessions = DashboardSessions(store)
    principal = principal_of(store)
    session_id = sessions.open(principal)
    store.keys.revoke(principal.workspace_id, principal.key_id, now=2.0)
    assert sessions.principal(session_id) is None
    assert len(sessions) == 0
