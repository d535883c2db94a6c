"""Acceptance: a key of workspace B sees nothing of workspace A (404, like a missing model)."""

from __future__ import annotations

from tests.e2e.conftest import EXAMPLES


def test_other_workspace_gets_404_everywhere(slipway_up):
    slipway_up.cli("deploy", str(EXAMPLES / "echo"), "--promote")
    with slipway_up.http() as admin_a:
        model = admin_a.get("/api/v1/models/echo").json()
        deployment_id = model["deployments"][0]["id"]
        workspace_b = admin_a.post("/api/v1/workspaces", json={"name": "team-b"}).json()
    key_b = workspace_b["admin_key"]["key"]

    with slipway_up.http(key_b) as b:
        gateway_routes = [
            ("POST", "/models/echo/predict", {"text": "x"}),
            ("POST", "/models/echo/environments/production/predict", {"text": "x"}),
            ("POST", f"/deployments/{deployment_id}/predict", {"text": "x"}),
            ("POST", "/v1/embeddings", {"model": "echo", "input": "x"}),
        ]
        management_routes = [
            ("GET", "/api/v1/models/echo", None),
            ("GET", f"/api/v1/deployments/{deployment_id}", None),
            ("GET", f"/api/v1/deployments/{deployment_id}/replicas", None),
            ("GET", f"/api/v1/deployments/{deployment_id}/logs", None),
            ("POST", f"/api/v1/deployments/{deployment_id}/scale", {"replicas": 2}),
            ("PATCH", f"/api/v1/deployments/{deployment_id}/autoscaling", {"max_replica": 3}),
            ("DELETE", f"/api/v1/deployments/{deployment_id}", None),
            ("GET", "/api/v1/models/echo/environments", None),
            ("POST", "/api/v1/models/echo/environments/production/promote", {"number": 1}),
            ("POST", "/api/v1/models/echo/environments/production/rollback", None),
        ]
        for method, path, body in gateway_routes + management_routes:
            response = b.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.status_code, response.text)
            assert "error" in response.json()
        assert [m["name"] for m in b.get("/api/v1/models").json()["data"]] == []
        assert b.get("/v1/models").json()["data"] == []

    with slipway_up.http() as admin_a:  # nothing B did changed A's deployment
        assert admin_a.get(f"/api/v1/deployments/{deployment_id}").json()["status"] == "active"
        assert admin_a.post("/models/echo/predict", json={"text": "x"}).status_code == 200
