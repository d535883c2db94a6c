"""Recent errors of a deployment: its failed requests (status >= 500) and failed replicas, newest first."""

from __future__ import annotations

from slipway.spec.usage import UsageRecord
from slipway.store import TraceRecord


def _usage(workspace_id: str, deployment_id: str, request_id: str, status: int, at: float) -> UsageRecord:
    return UsageRecord(request_id=request_id, workspace_id=workspace_id, key_id="key-1", model_name="echo",
                       deployment_id=deployment_id, route="chat.completions", status_code=status, latency_ms=30012.4,
                       created_at=at)


async def test_failed_requests_and_a_failed_replica_newest_first(api, workspace, reconciler):
    deployment_id = api.deploy().json()["id"]
    store = api.plane.store
    store.usage.insert_many([_usage(workspace.id, deployment_id, "req-ok", 200, 10.0),
                             _usage(workspace.id, deployment_id, "req-mine", 404, 11.0),
                             _usage(workspace.id, deployment_id, "req-502", 502, 12.0),
                             _usage(workspace.id, deployment_id, "req-traced", 500, 13.0)])
    store.traces.insert_many([TraceRecord(id="req-traced", workspace_id=workspace.id, model="echo", request={},
                                          response={"error": {"message": "the engine ran out of KV cache"}},
                                          created_at=13.0, status_code=500)])
    reconciler.failing.add(deployment_id)
    await api.plane.tick(20.0)
    errors = api.get(f"/api/v1/deployments/{deployment_id}/errors").json()["data"]
    assert [(e["source"], e["status"]) for e in errors] == [("replica", "failed"), ("request", "500"),
                                                            ("request", "502")]
    replica, traced, plain = errors
    assert replica["message"] == "load() raised: RuntimeError: weights are corrupt (exit code 3)"
    assert replica["replica_id"] and replica["request_id"] is None and replica["at"] == 20.0
    assert traced == {"at": 13.0, "source": "request", "status": "500", "request_id": "req-traced",
                      "replica_id": None, "message": "the engine ran out of KV cache"}
    assert plain["message"] == "502 Bad Gateway on chat.completions after 30012 ms"
    assert len(api.get(f"/api/v1/deployments/{deployment_id}/errors", params={"limit": 1}).json()["data"]) == 1


def test_a_healthy_deployment_has_none_and_bad_limits_are_400(api):
    deployment_id = api.deploy().json()["id"]
    assert api.get(f"/api/v1/deployments/{deployment_id}/errors").json() == {"object": "list", "data": []}
    response = api.get(f"/api/v1/deployments/{deployment_id}/errors", params={"limit": 0})
    assert response.status_code == 400 and "limit" in response.json()["error"]["message"]


def test_another_workspace_gets_404_and_a_key_without_admin_403(api, workspace):
    deployment_id = api.deploy().json()["id"]
    api.plane.store.usage.insert_many([_usage(workspace.id, deployment_id, "req-1", 500, 1.0)])
    other = api.post("/api/v1/workspaces", json={"name": "other"}).json()["admin_key"]["key"]
    hidden = api.get(f"/api/v1/deployments/{deployment_id}/errors", key=other)
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "not_found"
    invoke = api.post("/api/v1/keys", json={"scopes": ["invoke"]}).json()["key"]
    assert api.get(f"/api/v1/deployments/{deployment_id}/errors", key=invoke).status_code == 403
    assert api.get(f"/api/v1/deployments/{deployment_id}/errors", key=None).status_code == 401


def test_the_failure_reason_is_the_tracebacks_last_line_among_log_lines():
    from slipway.control.routes.errors import failure_reason

    detail = "\n".join([
        "replica r-1: the package's load() raised (exited with code 3); its log holds the traceback",
        '{"ts": 1.0, "level": "info", "logger": "uvicorn.error", "msg": "Waiting for application startup."}',
        "replica r-1: load() of package 'broken' failed:",
        "Traceback (most recent call last):",
        '  File "/p/model.py", line 3, in load',
        '    raise RuntimeError("weights are corrupt")',
        "RuntimeError: weights are corrupt",
        '{"ts": 2.0, "level": "info", "logger": "uvicorn.error", "msg": "Finished server process [1]"}',
    ])
    assert failure_reason(detail) == "RuntimeError: weights are corrupt"
    assert failure_reason("") == "" and failure_reason('{"msg": "x"}') == ""
