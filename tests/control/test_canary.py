"""Canaries in the control plane: start, complete, end, roll back, refusals, the snapshot and the eval gate."""

from __future__ import annotations

import pytest

from slipway.control import promotion
from slipway.errors import ConflictError
from tests.control.conftest import Api, package
from tests.control.routes.test_evals import (  # noqa: F401  (fixtures)
    create_suite,
    evals_api,
    model_server,
    wakes,
    worker,
)

PROMOTE = "/api/v1/models/echo/environments/production/promote"
CANARY = "/api/v1/models/echo/environments/production/canary"
ROLLBACK = "/api/v1/models/echo/environments/production/rollback"
OTHER_YAML = "name: other\nkind: custom\nautoscaling: {min_replica: 1, max_replica: 1}\n"


async def settle(api: Api, at: float) -> None:
    """Two control ticks: replicas start, then turn ready (deployments active, pending switches done)."""
    await api.plane.tick(at)
    await api.plane.tick(at + 0.5)


async def two_deployments(api: Api) -> tuple[str, str]:
    """echo #1 serving production and #2 serving development, both active."""
    first = api.deploy(promote="true").json()["id"]
    second = api.deploy().json()["id"]
    await settle(api, 1.0)
    return first, second


def production(api: Api) -> dict:
    return next(e for e in api.get("/api/v1/models/echo/environments").json()["data"] if e["name"] == "production")


def status(api: Api, deployment_id: str) -> str:
    return api.get(f"/api/v1/deployments/{deployment_id}").json()["status"]


def canaries_in_snapshot(api: Api) -> dict:
    snapshot = api.plane.snapshots.current()
    echo = next(m for m in snapshot.models if m.name == "echo")
    return {env: (c.deployment_id, c.percent) for env, c in echo.canaries.items()}


def assert_error(response, status_code: int, words: str) -> dict:
    assert response.status_code == status_code, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert words in error["message"], error["message"]
    return error


async def test_a_canary_starts_then_promoting_it_without_a_percent_completes_it(api):
    first, second = await two_deployments(api)
    response = api.post(PROMOTE, json={"number": 2, "canary_percent": 10})
    assert response.status_code == 200, response.text
    assert response.json() == {"model": "echo", "environment": "production", "deployment_id": second,
                               "serving_deployment_id": first, "pending": False, "canary_deployment_id": second,
                               "canary_percent": 10}
    assert production(api)["canary"] == {"deployment_id": second, "number": 2, "percent": 10}
    assert production(api)["deployment_id"] == first
    detail = api.get("/api/v1/models/echo").json()
    assert next(e for e in detail["environments"] if e["name"] == "production")["canary"]["number"] == 2
    listed = {d["id"]: d for d in api.get("/api/v1/deployments").json()["data"]}
    assert listed[second]["canary_environments"] == [{"environment": "production", "percent": 10}]
    assert listed[first]["canary_environments"] == []
    assert canaries_in_snapshot(api) == {"production": (second, 10)}
    # A new share for the same canary just changes the share.
    assert api.post(PROMOTE, json={"number": 2, "canary_percent": 25}).json()["canary_percent"] == 25

    completed = api.post(PROMOTE, json={"number": 2}).json()
    assert (completed["serving_deployment_id"], completed["pending"], completed["canary_deployment_id"]) == (
        second, False, None)
    assert production(api)["canary"] is None
    assert canaries_in_snapshot(api) == {}
    assert status(api, first) == "inactive", "the old deployment retires once nothing uses it"


async def test_a_canary_is_kept_running_while_it_is_one_and_retired_when_ended(api):
    first, second = await two_deployments(api)
    api.post(PROMOTE, json={"deployment_id": second, "canary_percent": 5})
    api.deploy()  # #3 takes development over from #2, which is now only production's canary
    await settle(api, 3.0)
    assert status(api, second) == "active"

    response = api.delete(CANARY)
    assert response.status_code == 200, response.text
    assert (response.json()["deployment_id"], response.json()["canary"]) == (first, None)
    assert status(api, second) == "inactive"
    assert canaries_in_snapshot(api) == {}
    assert_error(api.delete(CANARY), 404, "has no canary")


async def test_an_inactive_deployment_comes_back_as_a_canary(api):
    first, second = await two_deployments(api)
    api.deploy()
    await settle(api, 3.0)
    assert status(api, second) == "inactive"
    api.post(PROMOTE, json={"number": 2, "canary_percent": 20})
    assert status(api, second) == "deploying"
    await settle(api, 4.0)
    assert status(api, second) == "active" and production(api)["deployment_id"] == first


async def test_rollback_ends_the_canary_and_the_current_deployment_keeps_serving(api):
    first, second = await two_deployments(api)
    api.post(PROMOTE, json={"number": 2, "canary_percent": 50})
    body = api.post(ROLLBACK).json()
    assert (body["deployment_id"], body["serving_deployment_id"], body["canary_deployment_id"]) == (
        first, first, None)
    assert production(api)["canary"] is None and canaries_in_snapshot(api) == {}
    assert status(api, second) == "active", "development still serves it"


async def test_promoting_another_deployment_fully_calls_the_canary_off(api):
    first, second = await two_deployments(api)
    api.post(PROMOTE, json={"number": 2, "canary_percent": 10})
    api.post(PROMOTE, json={"number": 1})
    assert production(api)["canary"] is None and production(api)["deployment_id"] == first


async def test_bad_canaries_are_refused_in_the_api_error_shape(api):
    first, _ = await two_deployments(api)
    other = api.deploy(package(OTHER_YAML)).json()["id"]
    assert_error(api.post(PROMOTE, json={"deployment_id": other, "canary_percent": 10}), 404,
                 "model 'echo' has no deployment")
    assert_error(api.post(PROMOTE, json={"deployment_id": "dep-nope", "canary_percent": 10}), 404,
                 "has no deployment dep-nope")
    assert_error(api.post(PROMOTE, json={"number": 1, "canary_percent": 10}), 409, "already serves")
    for percent in (0, 100):
        error = assert_error(api.post(PROMOTE, json={"number": 2, "canary_percent": percent}), 400, "canary_percent")
        assert error["param"] == "body.canary_percent"
    staging = "/api/v1/models/echo/environments/staging"
    api.post("/api/v1/models/echo/environments", json={"name": "staging"})
    assert_error(api.post(f"{staging}/promote", json={"number": 2, "canary_percent": 10}), 409,
                 "has no deployment yet")
    assert production(api)["canary"] is None and production(api)["deployment_id"] == first


async def test_a_canary_is_refused_while_another_promotion_waits(plane, workspace):
    first = plane.deploy(workspace.id, package(), promote=True).deployment
    plane.store.deployments.update(first.id, 1.0, status="active")
    second, third = (plane.deploy(workspace.id, package()).deployment for _ in range(2))
    model = plane.store.models.get(workspace.id, "echo")
    with plane.store.transaction() as tx:
        promotion.promote(tx, model, "production", tx.deployments.get(second.id), 2.0)
    with pytest.raises(ConflictError, match=f"switching to deployment {second.id}"):
        with plane.store.transaction() as tx:
            promotion.start_canary(tx, model, "production", tx.deployments.get(third.id), 10, 3.0)
    # The waiting deployment itself may become the canary instead.
    with plane.store.transaction() as tx:
        env = promotion.start_canary(tx, model, "production", tx.deployments.get(second.id), 10, 3.0)
    assert (env.deployment_id, env.pending_deployment_id, env.canary_deployment_id) == (first.id, None, second.id)


async def test_the_gate_with_a_canary_percent_starts_a_canary_only_on_a_pass(evals_api, worker, model_server):
    first, second = await two_deployments(evals_api)
    create_suite(evals_api, n=8)
    model_server.behaviour.update({first: "half", second: "wrong"})

    async def run_on(deployment_id: str) -> str:
        run = evals_api.post("/api/v1/evals/runs", json={"suite": "arith", "target": deployment_id}).json()
        await worker.run_pending()
        return run["id"]

    baseline = await run_on(first)
    gate = {"model": "echo", "number": 2, "suite": "arith", "min_score": 0.2, "no_regression": True,
            "candidate_run": await run_on(second), "baseline_run": baseline, "canary_percent": 10}
    refused = evals_api.post("/api/v1/evals/gates", json=gate)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "gate_failed"
    untouched = production(evals_api)
    assert (untouched["deployment_id"], untouched["pending_deployment_id"], untouched["canary"]) == (first, None, None)

    model_server.behaviour[second] = "right"
    passed = evals_api.post("/api/v1/evals/gates", json={**gate, "candidate_run": await run_on(second)})
    assert passed.status_code == 200, passed.text
    promotion_out = passed.json()["promotion"]
    assert (promotion_out["serving_deployment_id"], promotion_out["canary_deployment_id"],
            promotion_out["canary_percent"]) == (first, second, 10)
    assert production(evals_api)["canary"] == {"deployment_id": second, "number": 2, "percent": 10}
