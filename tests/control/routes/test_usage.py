"""The usage route: grouping, time ranges in ISO 8601 or Unix seconds, admin or metrics keys."""

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
    assert row == {"requests": 2, "input_units": 4, "output_units": 6, "errors": 1, "avg_latency_ms": 10.0}


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
