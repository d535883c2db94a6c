"""Model and environment routes: listing, detail, custom environments, promote, rollback."""

from __future__ import annotations


def test_models_list_and_detail(api):
    first = api.deploy(promote="true").json()
    second = api.deploy().json()
    assert [m["name"] for m in api.get("/api/v1/models").json()["data"]] == ["echo"]
    model = api.get("/api/v1/models/echo").json()
    assert [d["id"] for d in model["deployments"]] == [first["id"], second["id"]]
    environments = {e["name"]: e["deployment_id"] for e in model["environments"]}
    assert environments == {"production": first["id"], "development": second["id"]}


def test_create_environment(api):
    api.deploy()
    response = api.post("/api/v1/models/echo/environments", json={"name": "staging"})
    assert response.status_code == 201 and response.json()["deployment_id"] is None
    assert api.post("/api/v1/models/echo/environments", json={"name": "staging"}).status_code == 409
    assert api.post("/api/v1/models/echo/environments", json={"name": "Bad Name"}).status_code == 400
    names = [e["name"] for e in api.get("/api/v1/models/echo/environments").json()["data"]]
    assert names == ["production", "development", "staging"]


async def test_promote_by_number_waits_for_ready_then_switches(api):
    first = api.deploy(promote="true").json()
    await api.plane.tick(1.0)
    await api.plane.tick(2.0)
    second = api.deploy().json()
    body = api.post("/api/v1/models/echo/environments/production/promote", json={"number": 2}).json()
    assert body == {"model": "echo", "environment": "production", "deployment_id": second["id"],
                    "serving_deployment_id": first["id"], "pending": True, "canary_deployment_id": None,
                    "canary_percent": None}
    await api.plane.tick(3.0)
    await api.plane.tick(4.0)
    production = api.get("/api/v1/models/echo/environments").json()["data"][0]
    assert (production["deployment_id"], production["pending_deployment_id"]) == (second["id"], None)
    assert api.get(f"/api/v1/deployments/{first['id']}").json()["status"] == "inactive"


async def test_rollback_returns_the_previous_deployment(api):
    first = api.deploy(promote="true").json()
    await api.plane.tick(1.0)
    await api.plane.tick(2.0)
    api.deploy(promote="true")
    await api.plane.tick(3.0)
    await api.plane.tick(4.0)
    body = api.post("/api/v1/models/echo/environments/production/rollback").json()
    assert body["deployment_id"] == first["id"] and body["pending"] is True
    await api.plane.tick(5.0)
    await api.plane.tick(6.0)
    production = api.get("/api/v1/models/echo/environments").json()["data"][0]
    assert production["deployment_id"] == first["id"]


def test_promote_needs_exactly_one_target(api):
    api.deploy()
    for body in ({}, {"number": 1, "deployment_id": "dep-x"}):
        response = api.post("/api/v1/models/echo/environments/production/promote", json=body)
        assert response.status_code == 400, body
    assert api.post("/api/v1/models/echo/environments/production/promote", json={"number": 9}).status_code == 404


def test_rollback_without_history_is_409(api):
    api.deploy(promote="true")
    response = api.post("/api/v1/models/echo/environments/development/rollback")
    assert response.status_code == 409 and "no earlier deployment" in response.json()["error"]["message"]
