"""The snapshot long poll for gateways in other processes."""

from __future__ import annotations

import threading
import time

from slipway.spec.snapshot import RoutingSnapshot
from tests.control.conftest import package


def test_snapshot_at_once_when_the_caller_is_behind(api, workspace):
    api.plane.deploy(workspace.id, package(), promote=True)
    body = api.get("/internal/snapshot", params={"after": 0}).json()
    snapshot = RoutingSnapshot.model_validate(body)
    assert snapshot.version == api.plane.store.state.version()
    assert [m.name for m in snapshot.models] == ["echo"]


def test_long_poll_returns_when_a_change_is_published(api, workspace):
    version = api.plane.snapshots.current().version
    threading.Timer(0.2, api.plane.create_key, args=(workspace.id,),
                    kwargs={"name": "", "scopes": ["invoke"], "models": None}).start()
    started = time.monotonic()
    body = api.get("/internal/snapshot", params={"after": version, "timeout": 10}).json()
    assert body["version"] > version and time.monotonic() - started < 5


def test_long_poll_times_out_with_the_current_version(api):
    version = api.plane.snapshots.current().version
    body = api.get("/internal/snapshot", params={"after": version, "timeout": 0.1}).json()
    assert body["version"] == version


def test_only_the_bootstrap_workspace_may_read_it(api):
    other = api.post("/api/v1/workspaces", json={"name": "team-b"}).json()["admin_key"]["key"]
    assert api.get("/internal/snapshot", key=other).status_code == 404
    invoke = api.post("/api/v1/keys", json={"scopes": ["invoke"]}).json()["key"]
    assert api.get("/internal/snapshot", key=invoke).status_code == 403
