"""Acceptance: restart `slipway up`; state is intact and replicas are neither orphaned nor doubled."""

from __future__ import annotations

import signal
import time
import uuid

import pytest

from tests.e2e.conftest import EXAMPLES, pid_alive, replica_pids

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgres"])
def database_env(request):
    """SQLite under $SLIPWAY_HOME, or a fresh PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield {}
        return
    psycopg = pytest.importorskip("psycopg")
    name = f"slipway_e2e_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL answers at 127.0.0.1:5432 ({exc})")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        yield {"SLIPWAY_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"}
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_restart_keeps_state_and_adopts_replicas(make_slipway, database_env):
    node = make_slipway()
    node.extra_env.update(database_env)
    node.start()
    node.cli("deploy", str(EXAMPLES / "echo"), "--promote")
    node.cli("deploy", str(EXAMPLES / "echo"), "--env", "staging")
    invoke_key = node.cli("keys", "create", "--scope", "invoke").stdout.strip().splitlines()[-1]
    with node.http(invoke_key) as http:
        for _ in range(5):
            assert http.post("/models/echo/predict", json={"text": "x"}).status_code == 200
    with node.http() as http:
        before_model = http.get("/api/v1/models/echo").json()
        before_keys = http.get("/api/v1/keys").json()["data"]
        # The gateway writes usage in batches every 0.5 s: wait until all five requests are stored.
        _wait(lambda: [row["requests"] for row in http.get("/api/v1/usage", params={"group_by": "model"}).json()["data"]]
              == [5], 10, "the five usage rows")
        before_usage = http.get("/api/v1/usage", params={"group_by": "model"}).json()["data"]
    pids_before = replica_pids(node.home)
    assert len(pids_before) == 2, pids_before

    # A crash: the control plane dies, its replicas live on and are adopted by the next one.
    node.stop(signal.SIGKILL)
    assert all(pid_alive(pid) for pid in pids_before)
    node.start()
    with node.http() as http:
        assert http.get("/api/v1/models/echo").json()["environments"] == before_model["environments"]
        assert [k["id"] for k in http.get("/api/v1/keys").json()["data"]] == [k["id"] for k in before_keys]
        assert http.get("/api/v1/usage", params={"group_by": "model"}).json()["data"] == before_usage
    with node.http(invoke_key) as http:
        assert http.post("/models/echo/predict", json={"text": "after"}).status_code == 200
    time.sleep(3)  # a few reconciler ticks: it must not start duplicates
    assert replica_pids(node.home) == pids_before

    # A clean stop: no replica outlives it; the next start brings them back.
    assert node.stop(signal.SIGINT) == 0
    _wait(lambda: not replica_pids(node.home), 30, "replicas to stop")
    node.start()
    with node.http(invoke_key) as http:
        _wait(lambda: http.post("/models/echo/predict", json={"text": "x"}).status_code == 200, 60, "echo to serve")
    assert len(replica_pids(node.home)) == 2
