"""Acceptance: a deployment scaled to zero answers its first request (held through the cold start), not fails it."""

from __future__ import annotations

import time

import httpx

from tests.e2e.conftest import EXAMPLES


def test_the_first_request_to_a_deployment_at_zero_is_answered(slipway_up):
    slipway_up.cli("deploy", str(EXAMPLES / "echo"), "--promote")
    http = slipway_up.http()
    environments = http.get("/api/v1/models/echo").json()["environments"]
    deployment_id = next(e["deployment_id"] for e in environments if e["name"] == "production")

    # Idle scale-to-zero, shortened: min_replica 0, a one-second window and no scale-down delay.
    patched = http.patch(f"/api/v1/deployments/{deployment_id}/autoscaling",
                         json={"min_replica": 0, "autoscaling_window": "1s", "scale_down_delay": "0s"})
    assert patched.status_code == 200, patched.text
    deadline = time.monotonic() + 60
    while True:
        deployment = http.get(f"/api/v1/deployments/{deployment_id}").json()
        replicas = http.get(f"/api/v1/deployments/{deployment_id}/replicas").json()["data"]
        if deployment["desired_replicas"] == 0 and not replicas:
            break
        assert time.monotonic() < deadline, f"never scaled to zero: {deployment}, {replicas}"
        time.sleep(0.2)

    started = time.monotonic()
    response = httpx.post(f"{slipway_up.url}/models/echo/predict", json={"text": "hello"}, timeout=120,
                          headers={"Authorization": f"Bearer {slipway_up.admin_key}"})
    cold_start = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.json()["echo"] == {"text": "hello"}
    deployment = http.get(f"/api/v1/deployments/{deployment_id}").json()
    assert deployment["ready_replicas"] >= 1 or deployment["desired_replicas"] >= 1
    print(f"cold start: the first request at zero replicas was answered after {cold_start:.2f}s")
