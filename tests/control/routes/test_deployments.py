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
