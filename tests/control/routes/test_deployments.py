"""Deployment routes: upload, read, replicas, logs, scale, autoscaling, deactivate."""

from __future__ import annotations

from tests.control.conftest import package, tarball


def test_deploy_returns_the_deployment(api):
    response = api.deploy()
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"].startswith("dep-") and body["number"] == 1 and body["status"] == "deploying"
    assert (body["model"], body["kind"], body["environment"]) == ("echo", "custom", "development")
    assert body["desired_replicas"] == 1 and body["autoscaling"]["max_replica"] == 3
    assert api.deploy(promote="true").json()["environment"] == "production"
    assert api.deploy(environment="staging").json()["environment"] == "staging"


def test_invalid_package_is_400_with_every_problem_and_writes_nothing(api):
    response = api.deploy(package("name: Bad_Name\nkind: custom\nreplicas: 3\n"
                                  "autoscaling: {min_replica: 4, max_replica: 2}\n"))
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    for expected in ("name", "replicas: unknown field", "min_replica (4) is greater than max_replica (2)"):
        assert expected in message
    assert api.get("/api/v1/models").json()["data"] == []
    assert not list((api.plane.home / "packages").rglob("slipway.yaml"))


def test_missing_model_py_is_400(api):
    response = api.deploy(package("name: nomodel\nkind: custom\n", model=None))
    assert response.status_code == 400 and "model.py" in response.json()["error"]["message"]


def test_path_traversal_is_400(api):
    response = api.deploy(tarball({"slipway.yaml": "name: echo\nkind: custom\n", "model.py": "x",
                                   "../../escape.py": "boom"}))
    assert response.status_code == 400 and "outside the package" in response.json()["error"]["message"]
    assert not (api.plane.home.parent / "escape.py").exists()


def test_empty_and_oversized_bodies(api):
    assert api.deploy(b"").status_code == 400
    api.plane.config = api.plane.config.model_copy(
        update={"packages": api.plane.config.packages.model_copy(update={"max_upload_bytes": 10})})
    response = api.deploy()
    assert response.status_code == 413 and response.json()["error"]["code"] == "package_too_large"


async def test_replicas_and_logs_most_recent_first_including_failed(api, backend, reconciler):
    deployment_id = api.deploy().json()["id"]
    reconciler.failing.add(deployment_id)
    await api.plane.tick(1.0)
    [replica] = api.get(f"/api/v1/deployments/{deployment_id}/replicas").json()["data"]
    assert replica["state"] == "failed"
    backend.log_lines[replica["id"]] = [f"line {i}" for i in range(10)] + ["RuntimeError: weights are corrupt"]
    logs = api.get(f"/api/v1/deployments/{deployment_id}/logs", params={"tail": 2}).json()["data"]
    assert logs == [{"replica_id": replica["id"], "state": "failed", "started_at": 1.0,
                     "logs": "line 9\nRuntimeError: weights are corrupt"}]
    detail = api.get(f"/api/v1/deployments/{deployment_id}").json()
    assert detail["status"] == "failed" and "weights are corrupt" in detail["status_detail"]


async def test_logs_of_a_replica_the_backend_cannot_read_say_so(api, reconciler):
    deployment_id = api.deploy().json()["id"]
    await api.plane.tick(1.0)
    [entry] = api.get(f"/api/v1/deployments/{deployment_id}/logs").json()["data"]
    assert entry["logs"].startswith("(logs unavailable")


async def test_scale_and_ready_count(api):
    deployment_id = api.deploy().json()["id"]
    body = api.post(f"/api/v1/deployments/{deployment_id}/scale", json={"replicas": 2}).json()
    assert body["desired_replicas"] == 2
    await api.plane.tick(1.0)
    await api.plane.tick(2.0)
    assert api.get(f"/api/v1/deployments/{deployment_id}").json()["ready_replicas"] == 2
    response = api.post(f"/api/v1/deployments/{deployment_id}/scale", json={"replicas": 1000})
    assert response.status_code == 400 and "between 0 and 64" in response.json()["error"]["message"]


def test_autoscaling_patch_is_partial_and_validated(api):
    deployment_id = api.deploy().json()["id"]
    body = api.patch(f"/api/v1/deployments/{deployment_id}/autoscaling",
                     json={"min_replica": 2, "scale_down_delay": "60s"}).json()
    assert body["autoscaling"]["min_replica"] == 2 and body["autoscaling"]["max_replica"] == 3
    assert body["autoscaling"]["scale_down_delay"] == 60.0
    assert body["desired_replicas"] == 2  # raised to the new minimum
    response = api.patch(f"/api/v1/deployments/{deployment_id}/autoscaling", json={"min_replica": 5})
    assert response.status_code == 400
    assert "min_replica (5) is greater than max_replica (3)" in response.json()["error"]["message"]
    assert api.patch(f"/api/v1/deployments/{deployment_id}/autoscaling", json={}).status_code == 400


def test_deactivate_stops_and_scale_brings_back(api):
    deployment_id = api.deploy().json()["id"]
    body = api.delete(f"/api/v1/deployments/{deployment_id}").json()
    assert (body["status"], body["desired_replicas"]) == ("inactive", 0)
    body = api.post(f"/api/v1/deployments/{deployment_id}/scale", json={"replicas": 1}).json()
    assert (body["status"], body["desired_replicas"]) == ("deploying", 1)


def test_unknown_deployment_is_404(api):
    response = api.get("/api/v1/deployments/dep-00000000")
    assert response.status_code == 404 and "dep-00000000" in response.json()["error"]["message"]


def test_pricing_patch_merges_removes_with_null_and_is_validated(api):
    deployment_id = api.deploy().json()["id"]
    base = f"/api/v1/deployments/{deployment_id}/pricing"
    assert api.get(base).json() == {"object": "deployment.pricing", "deployment_id": deployment_id, "model": "echo",
                                    "number": 1, "pricing": {}}
    api.patch(base, json={"per_request": 0.002, "per_replica_hour": 1.5})
    body = api.patch(base, json={"per_1k_prompt_tokens": 0.1, "per_replica_hour": None}).json()
    assert body["pricing"] == {"per_request": 0.002, "per_1k_prompt_tokens": 0.1}
    assert api.get(base).json()["pricing"] == body["pricing"]
    negative = api.patch(base, json={"per_request": -1})
    assert negative.status_code == 400 and "per_request" in negative.json()["error"]["message"]
    assert "greater than or equal to 0" in negative.json()["error"]["message"]
    unknown = api.patch(base, json={"per_token": 1})
    assert unknown.status_code == 400 and "per_token" in unknown.json()["error"]["message"]
    empty = api.patch(base, json={})
    assert empty.status_code == 400 and "give at least one price" in empty.json()["error"]["message"]
    assert api.patch("/api/v1/deployments/dep-00000000/pricing", json={"per_request": 1}).status_code == 404


async def test_list_is_every_deployment_with_environments_and_last_hour_of_traffic(api):
    import time

    from slipway.observe.history import MetricSample

    first = api.deploy(promote="true").json()["id"]
    second = api.deploy().json()["id"]
    await api.plane.tick(1.0)
    await api.plane.tick(2.0)
    now = time.time()
    # From 12.5 minutes ago: 60 s at 2 requests/s, a quarter of them errors, sampled every 5 s.
    for i in range(12):
        api.plane.history.record(first, MetricSample(seconds=5, requests=10, errors=2.5, replicas_ready=1),
                                 now - 750 + 5 * i)
    body = api.get("/api/v1/deployments").json()
    by_id = {d["id"]: d for d in body["data"]}
    assert list(by_id) == [first, second]
    assert by_id[first]["environments"] == ["production"] and by_id[first]["pending_environments"] == []
    assert by_id[second]["environments"] == ["development"]
    assert by_id[first]["ready_replicas"] == 1 and by_id[first]["model"] == "echo"
    traffic = by_id[first]["traffic"]
    assert (traffic["requests"], traffic["errors"]) == (120, 30)
    assert len(traffic["requests_per_bucket"]) == 12 and sum(traffic["requests_per_bucket"]) == 120
    assert traffic["requests_per_bucket"][9] == 120  # 47.5 minutes into the hour: the 10th 5-minute slice
    assert by_id[second]["traffic"] == {"requests": 0, "errors": 0, "requests_per_bucket": [0.0] * 12}
    other = api.post("/api/v1/workspaces", json={"name": "other"}).json()["admin_key"]["key"]
    assert api.get("/api/v1/deployments", key=other).json()["data"] == []
