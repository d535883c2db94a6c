"""Acceptance: SIGKILL a replica under closed-loop load; no request fails and it comes back."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx

from tests.e2e.conftest import EXAMPLES, pid_alive


def _ready_replicas(http: httpx.Client, deployment_id: str) -> list[dict]:
    replicas = http.get(f"/api/v1/deployments/{deployment_id}/replicas").json()["data"]
    return [r for r in replicas if r["state"] == "ready"]


def test_sigkill_replica_under_load_loses_no_request(slipway_up):
    slipway_up.cli("deploy", str(EXAMPLES / "echo"), "--promote")
    http = slipway_up.http()
    deployment_id = http.get("/api/v1/models/echo").json()["environments"]
    deployment_id = next(e["deployment_id"] for e in deployment_id if e["name"] == "production")
    slipway_up.cli("scale", deployment_id, "--replicas", "2")
    deadline = time.monotonic() + 60
    while len(_ready_replicas(http, deployment_id)) < 2:
        assert time.monotonic() < deadline, "second replica never became ready"
        time.sleep(0.2)

    results: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    total = 200
    issued = 0

    def worker() -> None:
        with httpx.Client(base_url=slipway_up.url, timeout=30,
                          headers={"Authorization": f"Bearer {slipway_up.admin_key}"}) as client:
            nonlocal issued
            while True:
                with lock:
                    if issued >= total:
                        return
                    issued += 1
                try:
                    response = client.post("/models/echo/predict", json={"text": "hello"})
                    with lock:
                        (results if response.status_code == 200 else errors).append(
                            response.status_code if response.status_code == 200 else f"{response.status_code} {response.text}")
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(repr(exc))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    while len(results) < 40:
        time.sleep(0.01)
    victim = _ready_replicas(http, deployment_id)[0]
    os.kill(victim["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    for thread in threads:
        thread.join(120)

    assert not errors, f"{len(errors)} of {total} requests failed: {errors[:5]}"
    assert len(results) == total
    assert not pid_alive(victim["pid"])

    # Back to two ready replicas, the killed one replaced, within the first backoff plus a start-up.
    while True:
        ready = _ready_replicas(http, deployment_id)
        if len(ready) == 2 and victim["pid"] not in {r["pid"] for r in ready}:
            break
        assert time.monotonic() - killed_at < 30, f"the killed replica was not replaced: {ready}"
        time.sleep(0.1)
    print(f"replica replaced and ready {time.monotonic() - killed_at:.2f}s after SIGKILL")
