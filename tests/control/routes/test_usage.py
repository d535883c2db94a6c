"""The usage route: grouping, time ranges in ISO 8601 or Unix seconds, admin or metrics keys, and cost
from each deployment's prices (usage prices per row, replica-hours per deployment)."""

from __future__ import annotations

import pytest

from slipway.spec.usage import UsageRecord

DAY = 86_400.0
T0 = 20_000 * DAY  # 2024-10-04T00:00:00Z


@pytest.fixture
def usage(api, workspace):
    api.plane.store.usage.insert_many([
        UsageRecord(request_id=f"r{i}", workspace_id=workspace.id, key_id=key, model_name=model, route="predict",
                    input_units=2, output_units=3, latency_ms=10.0, status_code=status, created_at=at)
        for i, (model, key, at, status) in enumerate([
            ("echo", "key-a", T0 + 1, 200), ("echo", "key-b", T0 + 2, 500), ("minilm", "key-a", T0 + DAY, 200)])
    ] + [UsageRecord(request_id="other", workspace_id="ws-other", model_name="echo", route="predict",
                     created_at=T0)])


def test_group_by_model_is_the_default(api, usage):
    body = api.get("/api/v1/usage").json()
    assert body["group_by"] == ["model"]
    assert [(r["model"], r["requests"], r["errors"], r["input_units"]) for r in body["data"]] == [
        ("echo", 2, 1, 4), ("minilm", 1, 0, 2)]


def test_group_by_day_and_key_with_iso_range(api, usage):
    body = api.get("/api/v1/usage", params={"group_by": "day,key", "start": "2024-10-04",
                                            "end": "2024-10-05T00:00:00Z"}).json()
    assert [(r["day"], r["key_id"], r["requests"]) for r in body["data"]] == [
        ("2024-10-04", "key-a", 1), ("2024-10-04", "key-b", 1)]
    assert body["start"] == T0 and body["end"] == T0 + DAY


def test_totals_with_empty_group_by_and_unix_range(api, usage):
    [row] = api.get("/api/v1/usage", params={"group_by": "", "start": str(T0 + 2)}).json()["data"]
    assert row == {"requests": 2, "input_units": 4, "output_units": 6, "errors": 1, "avg_latency_ms": 10.0,
                   "cost": None}


def test_metrics_key_may_read_usage_but_invoke_may_not(api, usage):
    metrics = api.post("/api/v1/keys", json={"scopes": ["metrics"]}).json()["key"]
    invoke = api.post("/api/v1/keys", json={"scopes": ["invoke"]}).json()["key"]
    assert api.get("/api/v1/usage", key=metrics).status_code == 200
    assert api.get("/api/v1/usage", key=invoke).status_code == 403
    assert api.get("/api/v1/models", key=metrics).status_code == 403


@pytest.mark.parametrize("params, words", [
    ({"group_by": "colour"}, "cannot group by colour"),
    ({"start": "yesterday"}, "is not a time"),
    ({"start": "2024-10-05", "end": "2024-10-04"}, "end must be after start"),
])
def test_bad_parameters_are_400(api, params, words):
    response = api.get("/api/v1/usage", params=params)
    assert response.status_code == 400 and words in response.json()["error"]["message"]


def _priced_usage(api, workspace, deployments):
    """Successful and failed requests of two deployments of one model, from two keys."""
    first, second = deployments
    rows = [("a1", first, "key-a", 1000, 500, 200), ("a2", first, "key-a", 3000, 500, 200),
            ("a3", first, "key-a", 9999, 9999, 500),  # failed: costs nothing
            ("b1", second, "key-a", 2000, 0, 200), ("b2", second, "key-b", 500, 0, 200)]
    api.plane.store.usage.insert_many([
        UsageRecord(request_id=rid, workspace_id=workspace.id, key_id=key, model_name="echo", deployment_id=dep,
                    route="predict", input_units=inp, output_units=out, status_code=status, created_at=T0 + 10)
        for rid, dep, key, inp, out, status in rows])


def test_cost_per_row_adds_each_deployments_share_at_its_own_prices(api, workspace):
    first, second = api.deploy().json()["id"], api.deploy().json()["id"]
    _priced_usage(api, workspace, (first, second))
    assert api.patch(f"/api/v1/deployments/{first}/pricing",
                     json={"per_1k_prompt_tokens": 0.5, "per_1k_completion_tokens": 2.0}).status_code == 200
    api.patch(f"/api/v1/deployments/{second}/pricing", json={"per_request": 0.25})
    body = api.get("/api/v1/usage", params={"group_by": "model,key"}).json()
    costs = {(r["model"], r["key_id"]): r["cost"] for r in body["data"]}
    # key-a: first 4000 prompt + 1000 completion tokens -> 2.0 + 2.0; second 1 request -> 0.25.
    assert costs == {("echo", "key-a"): 4.25, ("echo", "key-b"): 0.25}
    assert body["total_cost"] == 4.5 and body["replicas"] == []
    [total] = api.get("/api/v1/usage", params={"group_by": ""}).json()["data"]
    assert total["cost"] == 4.5 and total["requests"] == 5


def test_a_row_without_priced_deployments_has_no_cost(api, workspace):
    first, second = api.deploy().json()["id"], api.deploy().json()["id"]
    _priced_usage(api, workspace, (first, second))
    api.patch(f"/api/v1/deployments/{second}/pricing", json={"per_replica_hour": 3.0})
    body = api.get("/api/v1/usage", params={"group_by": "key"}).json()
    assert [r["cost"] for r in body["data"]] == [None, None] and body["total_cost"] is None


async def test_replica_hours_come_from_replica_rows_clipped_to_the_range(api, workspace):
    import time

    deployment = api.deploy().json()["id"]
    api.patch(f"/api/v1/deployments/{deployment}/pricing", json={"per_replica_hour": 2.0})
    now = time.time()
    await api.plane.tick(now - 7200)  # a replica starts two hours ago ...
    await api.plane.tick(now - 7199)  # ... and is ready from then on
    body = api.get("/api/v1/usage").json()
    [replicas] = body["replicas"]
    assert replicas["deployment_id"] == deployment and replicas["number"] == 1
    assert replicas["replica_hours"] == pytest.approx(2.0, abs=0.01)
    assert replicas["cost"] == pytest.approx(4.0, abs=0.02) and body["total_cost"] == replicas["cost"]
    last_hour = api.get("/api/v1/usage", params={"start": str(now - 3600)}).json()["replicas"][0]
    assert last_hour["replica_hours"] == pytest.approx(1.0, abs=0.01)
    # Stopped an hour ago: counts until then.
    api.post(f"/api/v1/deployments/{deployment}/scale", json={"replicas": 0})
    await api.plane.tick(now - 3600)
    stopped = api.get("/api/v1/usage").json()["replicas"][0]
    assert stopped["replica_hours"] == pytest.approx(1.0, abs=0.01)


def test_usage_cost_never_reads_another_workspaces_prices(api):
    deployment = api.deploy().json()["id"]
    api.patch(f"/api/v1/deployments/{deployment}/pricing", json={"per_request": 1.0})
    other = api.post("/api/v1/workspaces", json={"name": "other"}).json()
    # A row of the other workspace naming this workspace's deployment must not be priced with its prices.
    api.plane.store.usage.insert_many([UsageRecord(request_id="theirs", workspace_id=other["id"], model_name="echo",
                                                   deployment_id=deployment, route="predict", created_at=T0)])
    body = api.get("/api/v1/usage", key=other["admin_key"]["key"]).json()
    assert [(r["requests"], r["cost"]) for r in body["data"]] == [(1, None)]
    assert body["replicas"] == [] and body["total_cost"] is None
    assert api.get(f"/api/v1/deployments/{deployment}/pricing", key=other["admin_key"]["key"]).status_code == 404
