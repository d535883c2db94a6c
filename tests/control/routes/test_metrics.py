"""Metric routes: a deployment's history (scoped to the key's workspace) and the Prometheus page."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from slipway.observe import histogram as h
from slipway.observe.history import MetricSample


@pytest.fixture
def deployment_id(api) -> str:
    return api.deploy(promote="true").json()["id"]


def record_traffic(plane, deployment_id: str, seconds_ago: float, requests: int) -> None:
    plane.history.record(deployment_id, MetricSample(
        seconds=1.0, requests=requests, errors=1, latency=h.from_observations([0.03] * requests, (0.01, 0.05, 0.1)),
        in_flight=2.0, replicas_ready=1, replicas_desired=1), time.time() - seconds_ago)


def test_the_series_of_a_deployment(api, deployment_id):
    record_traffic(api.plane, deployment_id, seconds_ago=1800, requests=10)   # half an hour ago: 1 min points
    record_traffic(api.plane, deployment_id, seconds_ago=30, requests=4)      # recent: 5 s points
    response = api.get(f"/api/v1/deployments/{deployment_id}/metrics")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["deployment_id"] == deployment_id and body["window_seconds"] == 3600
    assert body["end"] - body["start"] == pytest.approx(3600)
    old, recent = body["data"]
    assert (old["step"], recent["step"]) == (60, 5)
    assert old["t"] < recent["t"] and body["start"] <= old["t"] + 60
    assert recent["requests_per_second"] == 4.0 and recent["error_rate"] == 0.25
    assert 0.01 < recent["latency_p50_seconds"] <= 0.05
    assert recent["ttft_p50_seconds"] is None and recent["output_tokens_per_second"] is None
    assert (recent["in_flight"], recent["replicas_ready"], recent["replicas_desired"]) == (2.0, 1, 1)

    short = api.get(f"/api/v1/deployments/{deployment_id}/metrics", params={"window": "15m"}).json()
    assert [p["step"] for p in short["data"]] == [5]


def test_a_deployment_without_history_has_an_empty_series(api, deployment_id):
    body = api.get(f"/api/v1/deployments/{deployment_id}/metrics").json()
    assert body["data"] == []


async def test_ticks_fill_the_series(api, deployment_id):
    now = time.time()
    await api.plane.tick(now - 2)
    await api.plane.tick(now - 1)
    body = api.get(f"/api/v1/deployments/{deployment_id}/metrics", params={"window": "5m"}).json()
    assert body["data"] and body["data"][-1]["replicas_ready"] == 1 and body["data"][-1]["replicas_desired"] == 1
    await api.plane.sampler.aclose()


def test_another_workspace_gets_404_exactly_like_a_missing_deployment(api, deployment_id):
    other_admin = api.post("/api/v1/workspaces", json={"name": "team-b"}).json()["admin_key"]["key"]
    record_traffic(api.plane, deployment_id, seconds_ago=10, requests=3)
    theirs = api.get(f"/api/v1/deployments/{deployment_id}/metrics", key=other_admin)
    missing = api.get("/api/v1/deployments/dep-000000000000/metrics", key=other_admin)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"]["code"] == "not_found"
    assert "requests_per_second" not in theirs.text


def test_metrics_keys_may_read_the_series_and_invoke_keys_may_not(api, deployment_id):
    metrics = api.post("/api/v1/keys", json={"scopes": ["metrics"]}).json()["key"]
    invoke = api.post("/api/v1/keys", json={"scopes": ["invoke"]}).json()["key"]
    path = f"/api/v1/deployments/{deployment_id}/metrics"
    assert api.get(path, key=metrics).status_code == 200
    assert api.get(path, key=invoke).status_code == 403
    assert api.get(path, key=None).status_code == 401


@pytest.mark.parametrize("window, words", [
    ("soon", "is not a duration; write e.g. 15m, 1h or 24h"),
    ("0m", "is not a duration"),
    ("2d", "longer than the 24h of history kept"),
])
def test_a_bad_window_is_400_and_says_what_to_write(api, deployment_id, window, words):
    response = api.get(f"/api/v1/deployments/{deployment_id}/metrics", params={"window": window})
    assert response.status_code == 400 and words in response.json()["error"]["message"]
    assert response.json()["error"]["code"] == "invalid_request"


def families(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


async def test_prometheus_page_without_a_key_and_without_secrets(api, deployment_id):
    await api.plane.tick(1.0)
    await api.plane.tick(2.0)
    response = api.get("/metrics", key=None)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    found = families(response.text)
    replicas = {s.labels["state"]: s.value for s in found["slipway_control_replicas"]
                if s.labels["deployment"] == deployment_id}
    assert replicas["desired"] == 1 and replicas["ready"] == 1 and replicas["failed"] == 0
    [labels] = {(s.labels["model"], s.labels["environment"]) for s in found["slipway_control_replicas"]}
    assert labels == ("echo", "production")
    assert [(s.labels, s.value) for s in found["slipway_control_deployments"]] == [
        ({"model": "echo", "status": "active"}, 1.0)]
    assert found["slipway_control_reconcile_tick_duration_seconds"]
    # The page is unauthenticated: no secret, key digest, key prefix or replica address on it.
    keys = api.plane.store.keys.list(api.plane.system_workspace_id)
    for secret in [api.admin_key, *(k.key_hash for k in keys), *(k.prefix for k in keys)]:
        assert secret not in response.text
    assert "127.0.0.1" not in response.text
    await api.plane.sampler.aclose()


def test_prometheus_page_adds_the_registries_it_was_given(plane, bootstrapped):
    from fastapi.testclient import TestClient

    from slipway.control import create_control_app

    gateway = CollectorRegistry()
    Counter("slipway_gateway_requests", "requests", registry=gateway).inc()
    with TestClient(create_control_app(plane, metrics_registries=[gateway])) as client:
        found = families(client.get("/metrics").text)
    assert "slipway_control_replicas" in found and found["slipway_gateway_requests"][0].value == 1


def test_autoscaled_deployments_show_the_autoscalers_count(api, deployment_id):
    from slipway.control.autoscaler import Autoscaler, InProcessLoadSource

    api.plane.autoscaler = Autoscaler(InProcessLoadSource(lambda: {"deployments": {}}))
    asyncio.run(_ticks(api.plane, 1.0, 2.0, 3.0))                 # active after 2: autoscaled from then on
    found = families(api.get("/metrics", key=None).text)
    [desired] = found["slipway_control_autoscaler_desired_replicas"]
    assert desired.labels["deployment"] == deployment_id and desired.value == 1


async def _ticks(plane, *times: float) -> None:
    for now in times:
        await plane.tick(now)
    await plane.sampler.aclose()
