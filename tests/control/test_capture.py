"""Capture switches in the routing snapshot (package and environment) and trace retention."""

from __future__ import annotations

import pytest

from slipway.control.plane import TRACE_PRUNE_INTERVAL, trace_retention_from_env
from slipway.errors import SpecError
from slipway.store import TraceRecord
from tests.control.conftest import package

CAPTURING_YAML = "name: echo\nkind: custom\ncapture: true\n"
DAY = 86400.0


def snapshot_of(api):
    snapshot = api.plane.snapshots.current()
    return {m.name: m for m in snapshot.models}, {d.deployment_id: d for d in snapshot.deployments}


def test_a_package_with_capture_true_is_a_capturing_deployment_in_the_snapshot(api):
    capturing = api.deploy(package(CAPTURING_YAML), promote="true").json()
    plain = api.deploy().json()
    _, deployments = snapshot_of(api)
    assert deployments[capturing["id"]].capture is True
    assert deployments[plain["id"]].capture is False


def test_an_environment_capture_switch_reaches_the_snapshot(api):
    api.deploy(promote="true")
    version = api.plane.snapshots.current().version
    response = api.patch("/api/v1/models/echo/environments/production", json={"capture": True})
    assert response.status_code == 200, response.text
    assert response.json()["capture"] is True and response.json()["name"] == "production"
    models, _ = snapshot_of(api)
    assert models["echo"].capture_environments == ["production"]
    assert api.plane.snapshots.current().version > version

    assert api.patch("/api/v1/models/echo/environments/production", json={"capture": False}).status_code == 200
    models, _ = snapshot_of(api)
    assert models["echo"].capture_environments == []


def test_the_environment_switch_refuses_unknown_names_and_fields(api):
    api.deploy()
    missing = api.patch("/api/v1/models/echo/environments/staging", json={"capture": True})
    assert missing.status_code == 404 and "no environment 'staging'" in missing.json()["error"]["message"]
    assert api.patch("/api/v1/models/nope/environments/production", json={"capture": True}).status_code == 404
    assert api.patch("/api/v1/models/echo/environments/production", json={"capture": "maybe"}).status_code == 400
    assert api.patch("/api/v1/models/echo/environments/production", json={"captur": True}).status_code == 400


def trace(trace_id: str, created_at: float) -> TraceRecord:
    return TraceRecord(id=trace_id, workspace_id="ws-a", model="echo", request={}, response=None,
                       created_at=created_at)


def test_traces_older_than_the_retention_are_deleted_once_an_hour(plane, store):
    now = 100 * DAY
    plane.trace_retention_days = 30
    store.traces.insert_many([trace("old", now - 31 * DAY), trace("recent", now - 29 * DAY)])
    assert plane.prune_traces(now) == 1
    assert [t.id for t in store.traces.list("ws-a")] == ["recent"]

    store.traces.insert_many([trace("older", now - 40 * DAY)])
    assert plane.prune_traces(now + TRACE_PRUNE_INTERVAL - 1) is None  # not due yet
    assert store.traces.count("ws-a") == 2
    assert plane.prune_traces(now + TRACE_PRUNE_INTERVAL) == 1
    assert [t.id for t in store.traces.list("ws-a")] == ["recent"]


async def test_the_control_loop_prunes_traces(plane, store):
    store.traces.insert_many([trace("old", 0.0)])
    await plane.tick(31 * DAY)
    assert store.traces.count("ws-a") == 0


def test_retention_days_come_from_the_environment():
    assert trace_retention_from_env({}) == 30
    assert trace_retention_from_env({"SLIPWAY_TRACE_RETENTION_DAYS": "7.5"}) == 7.5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(SpecError, match="SLIPWAY_TRACE_RETENTION_DAYS"):
            trace_retention_from_env({"SLIPWAY_TRACE_RETENTION_DAYS": bad})
