"""The management API as a whole: authentication, OpenAI-shaped errors, OpenAPI, workspace isolation."""

from __future__ import annotations

import pytest

from tests.control.conftest import package


def _assert_openai_error(response, status: int, words: str = "") -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert words.lower() in error["message"].lower(), error
    return error


def test_openapi_document_lists_the_routes(api):
    spec = api.client.get("/api/v1/openapi.json").json()
    for path in ("/api/v1/deployments", "/api/v1/models/{name}/environments/{environment}/promote",
                 "/api/v1/keys", "/api/v1/usage", "/api/v1/workspaces", "/internal/snapshot"):
        assert path in spec["paths"], path


def test_no_key_is_401_in_openai_shape(api):
    response = api.get("/api/v1/models", key=None)
    error = _assert_openai_error(response, 401, "missing API key")
    assert error["type"] == "authentication_error"
    assert response.headers["www-authenticate"] == "Bearer"


def test_wrong_key_is_401(api):
    _assert_openai_error(api.get("/api/v1/models", key="sk-slw-" + "x" * 40), 401, "invalid API key")


def test_api_key_header_works_too(api):
    response = api.client.get("/api/v1/models", headers={"Api-Key": api.admin_key})
    assert response.status_code == 200


def test_invoke_key_cannot_manage(api):
    invoke = api.post("/api/v1/keys", json={"scopes": ["invoke"]}).json()["key"]
    error = _assert_openai_error(api.get("/api/v1/models", key=invoke), 403, "lacks the 'admin' scope")
    assert error["type"] == "permission_error"
    _assert_openai_error(api.post("/api/v1/deployments", key=invoke, content=package()), 403, "admin")


def test_validation_errors_are_400_naming_the_field(api):
    deployment = api.deploy().json()
    error = _assert_openai_error(api.post(f"/api/v1/deployments/{deployment['id']}/scale", json={"replicas": -1}),
                                 400, "replicas")
    assert error["param"] == "body.replicas"
    _assert_openai_error(api.post(f"/api/v1/deployments/{deployment['id']}/scale", content=b"{oops",
                                  headers={"Content-Type": "application/json"}), 400, "not valid JSON")
    _assert_openai_error(api.post(f"/api/v1/deployments/{deployment['id']}/scale", json={"replicas": 1, "x": 2}),
                         400, "extra")


def test_unknown_route_and_method_are_openai_errors(api):
    _assert_openai_error(api.get("/api/v1/nothing-here"), 404, "no route GET /api/v1/nothing-here")
    _assert_openai_error(api.request("PUT", "/api/v1/models"), 405, "PUT is not allowed")


def test_unexpected_exception_is_500_in_openai_shape(api, monkeypatch):
    def explode(*args, **kwargs):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(api.plane.store.models, "list", explode)
    error = _assert_openai_error(api.get("/api/v1/models"), 500, "internal error (ZeroDivisionError)")
    assert error["type"] == "server_error"


def test_every_response_carries_a_request_id(api):
    assert api.get("/api/v1/models").headers["x-request-id"]
    assert api.get("/api/v1/models", headers={"X-Request-Id": "abc123"}).headers["x-request-id"] == "abc123"


@pytest.fixture
def other_workspace_key(api):
    return api.post("/api/v1/workspaces", json={"name": "team-b"}).json()["admin_key"]["key"]


def test_another_workspace_sees_404_on_every_route(api, other_workspace_key):
    deployment_id = api.deploy(promote="true").json()["id"]
    routes = [
        ("GET", "/api/v1/models/echo", None),
        ("GET", f"/api/v1/deployments/{deployment_id}", None),
        ("GET", f"/api/v1/deployments/{deployment_id}/replicas", None),
        ("GET", f"/api/v1/deployments/{deployment_id}/logs", None),
        ("POST", f"/api/v1/deployments/{deployment_id}/scale", {"replicas": 2}),
        ("PATCH", f"/api/v1/deployments/{deployment_id}/autoscaling", {"max_replica": 3}),
        ("DELETE", f"/api/v1/deployments/{deployment_id}", None),
        ("GET", "/api/v1/models/echo/environments", None),
        ("POST", "/api/v1/models/echo/environments", {"name": "qa"}),
        ("POST", "/api/v1/models/echo/environments/production/promote", {"number": 1}),
        ("POST", "/api/v1/models/echo/environments/production/promote", {"deployment_id": deployment_id}),
        ("POST", "/api/v1/models/echo/environments/production/rollback", None),
    ]
    for method, path, body in routes:
        theirs = api.request(method, path, key=other_workspace_key, json=body)
        missing = api.request(method, path.replace("echo", "nope").replace(deployment_id, "dep-00000000"),
                              key=other_workspace_key, json=body)
        assert theirs.status_code == missing.status_code == 404, (method, path, theirs.text)
        assert theirs.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"
    assert api.get("/api/v1/models", key=other_workspace_key).json()["data"] == []
    keys = api.get("/api/v1/keys").json()["data"]
    assert api.request("DELETE", f"/api/v1/keys/{keys[0]['id']}", key=other_workspace_key).status_code == 404
    after = api.get(f"/api/v1/deployments/{deployment_id}").json()
    assert (after["status"], after["desired_replicas"]) == ("deploying", 1)
