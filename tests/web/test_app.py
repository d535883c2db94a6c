"""The dashboard's session endpoints against a real `slipway up`, over HTTP with httpx."""

from __future__ import annotations

import httpx

from tests.web.conftest import DASHBOARD, sign_in


def test_root_redirects_to_the_dashboard_and_serves_the_page(slipway_echo):
    root = httpx.get(f"{slipway_echo.url}/", follow_redirects=False)
    assert root.status_code == 302 and root.headers["location"] == "/ui/"
    page = httpx.get(f"{slipway_echo.url}/ui/")
    assert page.status_code == 200 and '<script type="module" src="/ui/static/js/app.js">' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    script = httpx.get(f"{slipway_echo.url}/ui/static/js/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    missing = httpx.get(f"{slipway_echo.url}/ui/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_sign_in_sets_an_httponly_strict_cookie_holding_no_key(slipway_echo):
    key = slipway_echo.admin_key
    response = httpx.post(f"{slipway_echo.url}/ui/session", json={"key": key}, headers=DASHBOARD)
    assert response.status_code == 200, response.text
    assert response.json()["signed_in"] is True
    set_cookie = response.headers["set-cookie"]
    attributes = [part.strip().lower() for part in set_cookie.split(";")]
    assert "httponly" in attributes and "samesite=strict" in attributes and "path=/" in attributes
    assert "secure" not in attributes, "plain http on 127.0.0.1 must still get the cookie back"
    session_id = response.cookies["slipway_session"]
    assert key not in set_cookie and len(session_id) >= 43
    assert key not in slipway_echo.output(), "the key must not reach the log"
    log_file = slipway_echo.home / "logs" / "slipway.log"
    assert key not in log_file.read_text()


def test_bad_key_gets_a_401_in_the_openai_error_shape(slipway_echo):
    response = httpx.post(f"{slipway_echo.url}/ui/session", json={"key": "sk-slw-not-a-key"}, headers=DASHBOARD)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error" and "invalid API key" in error["message"]
    assert "set-cookie" not in response.headers
    malformed = httpx.post(f"{slipway_echo.url}/ui/session", content=b"key=x", headers=DASHBOARD)
    assert malformed.status_code == 400 and '{"key"' in malformed.json()["error"]["message"]


def test_sign_in_needs_the_dashboard_header_and_an_admin_key(slipway_echo):
    no_header = httpx.post(f"{slipway_echo.url}/ui/session", json={"key": slipway_echo.admin_key})
    assert no_header.status_code == 403 and no_header.json()["error"]["code"] == "missing_dashboard_header"
    with slipway_echo.http() as admin:
        invoke_key = admin.post("/api/v1/keys", json={"name": "invoke", "scopes": ["invoke"]}).json()["key"]
    refused = httpx.post(f"{slipway_echo.url}/ui/session", json={"key": invoke_key}, headers=DASHBOARD)
    assert refused.status_code == 403 and "admin" in refused.json()["error"]["message"]


def test_the_cookie_authenticates_dashboard_calls_to_the_api_until_logout(slipway_echo):
    with sign_in(slipway_echo, slipway_echo.admin_key) as browser:
        assert browser.get("/ui/session").json()["signed_in"] is True
        models = browser.get("/api/v1/models")
        assert models.status_code == 200 and [m["name"] for m in models.json()["data"]] == ["echo"]
        # Without the dashboard header the cookie is not a credential (another site's form could send it).
        bare = browser.get("/api/v1/models", headers={"X-Slipway-Dashboard": ""})
        assert bare.status_code == 401 and bare.json()["error"]["type"] == "authentication_error"
        # A key header is judged by its key, whatever the cookie says.
        wrong_key = browser.get("/api/v1/models", headers={"Authorization": "Bearer sk-slw-wrong"})
        assert wrong_key.status_code == 401

        logout = browser.post("/ui/logout")
        assert logout.status_code == 200 and 'slipway_session=""' in logout.headers["set-cookie"]
        assert browser.get("/ui/session").json() == {"signed_in": False}
        assert browser.get("/api/v1/models").status_code == 401


def test_an_old_session_cookie_is_refused_after_logout(slipway_echo):
    with sign_in(slipway_echo, slipway_echo.admin_key) as browser:
        stolen = browser.cookies["slipway_session"]
        browser.post("/ui/logout")
    replay = httpx.get(f"{slipway_echo.url}/api/v1/models", headers=DASHBOARD, cookies={"slipway_session": stolen})
    assert replay.status_code == 401 and "sign in again" in replay.json()["error"]["message"]


def test_signed_out_visitors_get_401_from_the_api(slipway_echo):
    response = httpx.get(f"{slipway_echo.url}/api/v1/models", headers=DASHBOARD)
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{slipway_echo.url}/ui/session").json() == {"signed_in": False}


def test_revoking_the_key_ends_its_session(slipway_echo):
    with slipway_echo.http() as admin:
        created = admin.post("/api/v1/keys", json={"name": "short-lived", "scopes": ["admin"]}).json()
    with sign_in(slipway_echo, created["key"]) as browser:
        assert browser.get("/api/v1/keys").status_code == 200
        with slipway_echo.http() as admin:
            assert admin.delete(f"/api/v1/keys/{created['id']}").status_code == 200
        assert browser.get("/api/v1/keys").status_code == 401


def test_another_workspace_session_sees_none_of_workspace_a(slipway_echo):
    with slipway_echo.http() as admin_a:
        workspace_b = admin_a.post("/api/v1/workspaces", json={"name": "dashboard-b"}).json()
        deployment_id = admin_a.get("/api/v1/models/echo").json()["deployments"][0]["id"]
    with sign_in(slipway_echo, workspace_b["admin_key"]["key"]) as browser_b:
        assert browser_b.get("/ui/session").json()["workspace_id"] == workspace_b["id"]
        assert browser_b.get("/api/v1/models").json()["data"] == []
        assert browser_b.get("/api/v1/models/echo").status_code == 404
        assert browser_b.get(f"/api/v1/deployments/{deployment_id}").status_code == 404
        assert browser_b.get("/api/v1/usage?group_by=model,key").json()["data"] == []
        assert browser_b.get("/api/v1/deployments").json()["data"] == []
        for path in ("errors", "pricing", "logs", "replicas", "metrics"):
            assert browser_b.get(f"/api/v1/deployments/{deployment_id}/{path}").status_code == 404, path
        assert browser_b.patch(f"/api/v1/deployments/{deployment_id}/pricing",
                               json={"per_request": 1}).status_code == 404
        assert browser_b.patch(f"/api/v1/deployments/{deployment_id}/autoscaling",
                               json={"max_replica": 5}).status_code == 404
    # A key of workspace B (no session) is refused the same way.
    with slipway_echo.http(workspace_b["admin_key"]["key"]) as key_b:
        assert key_b.get("/api/v1/deployments").json()["data"] == []
        assert key_b.get(f"/api/v1/deployments/{deployment_id}/errors").status_code == 404
        assert key_b.get("/api/v1/usage").json() == {"object": "list", "group_by": ["model"], "start": None,
                                                     "end": None, "data": [], "replicas": [], "total_cost": None}


def test_signed_out_visitors_get_401_from_every_dashboard_read(slipway_echo):
    with slipway_echo.http() as admin:
        deployment_id = admin.get("/api/v1/models/echo").json()["deployments"][0]["id"]
    for path in ("/api/v1/deployments", f"/api/v1/deployments/{deployment_id}",
                 f"/api/v1/deployments/{deployment_id}/errors", f"/api/v1/deployments/{deployment_id}/pricing",
                 f"/api/v1/deployments/{deployment_id}/logs", "/api/v1/usage", "/api/v1/keys"):
        response = httpx.get(f"{slipway_echo.url}{path}", headers=DASHBOARD)
        assert response.status_code == 401, path
        assert response.json()["error"]["type"] == "authentication_error"
