"""Key routes: the secret is shown once and stored hashed; revoke works at once; workspaces."""

from __future__ import annotations

import hashlib


def test_created_key_is_shown_once_and_stored_as_a_digest(api):
    created = api.post("/api/v1/keys", json={"name": "ci", "scopes": ["invoke"], "models": ["echo"]})
    assert created.status_code == 201
    body = created.json()
    secret = body["key"]
    assert secret.startswith("sk-slw-") and body["prefix"] == secret[:12]
    assert (body["scopes"], body["models"], body["revoked_at"]) == (["invoke"], ["echo"], None)
    listed = {k["id"]: k for k in api.get("/api/v1/keys").json()["data"]}
    assert "key" not in listed[body["id"]] and secret not in str(listed)
    row = api.plane.store.keys.get_by_hash(hashlib.sha256(secret.encode()).hexdigest())
    assert row.id == body["id"]


def test_model_limited_key_reaches_the_snapshot(api):
    body = api.post("/api/v1/keys", json={"scopes": ["invoke"], "models": ["echo"]}).json()
    [entry] = [k for k in api.plane.snapshots.current().keys if k.key_id == body["id"]]
    assert entry.models == ["echo"] and entry.scopes == ["invoke"]


def test_bad_key_request_is_400(api):
    response = api.post("/api/v1/keys", json={"scopes": ["admin"], "models": ["echo"]})
    assert response.status_code == 400 and "applies only" in response.json()["error"]["message"]


def test_revoked_key_is_refused_at_once_and_version_bumps(api):
    body = api.post("/api/v1/keys", json={"scopes": ["admin"]}).json()
    assert api.get("/api/v1/models", key=body["key"]).status_code == 200   # now cached
    version = api.plane.snapshots.current().version
    revoked = api.delete(f"/api/v1/keys/{body['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    response = api.get("/api/v1/models", key=body["key"])
    assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]
    assert api.plane.snapshots.current().version > version
    assert body["id"] not in {k.key_id for k in api.plane.snapshots.current().keys}


def test_unknown_key_id_is_404(api):
    assert api.delete("/api/v1/keys/key-000000000000").status_code == 404


def test_workspace_creation_returns_its_first_admin_key(api):
    response = api.post("/api/v1/workspaces", json={"name": "team-b"})
    assert response.status_code == 201
    body = response.json()
    key = body["admin_key"]["key"]
    assert body["name"] == "team-b" and body["admin_key"]["scopes"] == ["admin"]
    assert api.get("/api/v1/keys", key=key).json()["data"][0]["id"] == body["admin_key"]["id"]
    assert api.post("/api/v1/workspaces", json={"name": "team-b"}).status_code == 409
