"""Eval routes: suite upload (every bad line by number), runs executed by the worker, results, gate, isolation."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from slipway.control.evaluation import EvalServices
from slipway.evals.catalog import SuiteCatalog
from slipway.evals.runner import EvalWorker
from tests.control.conftest import Api
from tests.evals.model_server import ModelServer, items

from .learning import ServerThread, other_key  # noqa: F401

GRADERS = [{"type": "exact"}, {"type": "includes", "name": "mentions"}]


class Wakes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def model_server():
    server = ModelServer({"echo": "right"})
    with ServerThread(server) as thread:
        server.url = thread.url
        yield server


@pytest.fixture
def wakes() -> Wakes:
    return Wakes()


@pytest.fixture
def worker(store, home, model_server) -> EvalWorker:
    return EvalWorker(store, home, gateway_url=model_server.url, key_for=lambda _workspace: "sk-test")


@pytest.fixture
def evals_api(plane, bootstrapped, store, home, wakes):
    from slipway.control import create_control_app

    services = EvalServices(suites=SuiteCatalog(store, home), wake_runs=wakes)
    with TestClient(create_control_app(plane, evals_services=services), raise_server_exceptions=False) as client:
        yield Api(client=client, admin_key=bootstrapped[1], plane=plane)


def create_suite(api: Api, name: str = "arith", n: int = 4, **more):
    body = {"name": name, "items": "".join(json.dumps(i) + "\n" for i in items(n)), "graders": GRADERS, **more}
    return api.post("/api/v1/evals/suites", json=body)


async def two_deployments(api: Api) -> tuple[str, str]:
    """echo #1 serving production and #2 active in development."""
    first = api.deploy(promote="true").json()["id"]
    second = api.deploy().json()["id"]
    await api.plane.tick(1.0)
    await api.plane.tick(2.0)
    return first, second


def test_suite_upload_lists_and_reads_by_name(evals_api, home):
    response = create_suite(evals_api, sampling={"max_tokens": 16})
    assert response.status_code == 201, response.text
    suite = response.json()
    assert suite["object"] == "eval.suite" and suite["num_items"] == 4 and suite["name"] == "arith"
    assert suite["sampling"] == {"temperature": 0.0, "max_tokens": 16, "concurrency": 4}
    assert [g["type"] for g in suite["graders"]] == ["exact", "includes"]
    assert (home / "evals" / "items" / f"{suite['items_hash']}.jsonl").is_file()
    assert [s["id"] for s in evals_api.get("/api/v1/evals/suites").json()["data"]] == [suite["id"]]
    assert evals_api.get("/api/v1/evals/suites/arith").json() == suite
    assert create_suite(evals_api).status_code == 409


def test_every_bad_line_and_grader_is_reported_and_nothing_is_stored(evals_api):
    lines = [json.dumps(items(1)[0]), "{not json", json.dumps({"ideal": "4"}), "", "[1, 2]"]
    response = evals_api.post("/api/v1/evals/suites", json={"name": "bad", "items": "\n".join(lines),
                                                            "graders": GRADERS})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    for words in ("line 2: invalid JSON", "line 3:", 'needs "input" or a non-empty "messages"',
                  "line 5: expected a JSON object"):
        assert words in message, message
    assert "line 1" not in message and "line 4" not in message
    graders = [{"type": "regex", "pattern": "("}, {"type": "llm_judge"}, {"type": "telepathy"}]
    response = evals_api.post("/api/v1/evals/suites", json={"name": "bad", "items": items(1), "graders": graders})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_suite"
    message = response.json()["error"]["message"]
    assert "graders.2" in message  # an unknown type is refused before the graders are built
    response = evals_api.post("/api/v1/evals/suites", json={"name": "bad", "items": items(1), "graders": graders[:2]})
    message = response.json()["error"]["message"]
    assert "graders.0: grader 'regex': invalid regular expression" in message
    assert "graders.1: an llm_judge needs `model`" in message
    assert evals_api.get("/api/v1/evals/suites").json()["data"] == []


async def test_a_run_is_queued_executed_by_the_worker_and_its_results_paged(evals_api, worker, wakes, model_server):
    first, _ = await two_deployments(evals_api)
    model_server.behaviour[first] = "right"
    create_suite(evals_api, n=5)
    response = evals_api.post("/api/v1/evals/runs", json={"suite": "arith", "target": "echo#1"})
    assert response.status_code == 201, response.text
    run = response.json()
    assert (run["status"], run["target_kind"], run["target"]) == ("queued", "deployment", first)
    assert wakes.count == 1
    assert await worker.run_pending() == 1
    done = evals_api.get(f"/api/v1/evals/runs/{run['id']}").json()
    assert done["status"] == "succeeded" and done["started_at"] and done["finished_at"]
    summary = done["summary"]
    assert summary["mean_score"] == 1.0 and summary["pass_rate"] == 1.0 and summary["num_items"] == 5
    assert summary["pass_rate_ci"][1] == 1.0 and summary["pass_rate_ci"][0] < 1.0
    page = evals_api.get(f"/api/v1/evals/runs/{run['id']}/results", params={"limit": 3}).json()
    assert [r["item_index"] for r in page["data"]] == [0, 1, 2] and page["has_more"]
    assert page["data"][1]["sample"]["output"] == "2" and page["data"][1]["passed"]
    rest = evals_api.get(f"/api/v1/evals/runs/{run['id']}/results", params={"after": 2}).json()
    assert [r["item_index"] for r in rest["data"]] == [3, 4] and not rest["has_more"]
    env_run = evals_api.post("/api/v1/evals/runs", json={"suite": "arith", "target": "echo@production"}).json()
    assert (env_run["target_kind"], env_run["target"]) == ("environment", "echo@production")
    assert [r["id"] for r in evals_api.get("/api/v1/evals/runs").json()["data"]] == [env_run["id"], run["id"]]


async def test_a_run_whose_target_never_answers_fails_with_the_reason(evals_api, worker, model_server):
    first, _ = await two_deployments(evals_api)
    model_server.behaviour[first] = "down"
    create_suite(evals_api, n=2, sampling={"concurrency": 2})
    run = evals_api.post("/api/v1/evals/runs", json={"suite": "arith", "target": first}).json()
    await worker.run_pending()
    done = evals_api.get(f"/api/v1/evals/runs/{run['id']}").json()
    assert done["status"] == "failed" and "every item failed" in done["error"]["message"]
    assert "503" in done["error"]["message"]


def test_unknown_targets_and_suites_are_404(evals_api):
    evals_api.deploy()
    create_suite(evals_api)
    for target, words in (("ghost", "model 'ghost' not found"), ("echo#9", "has no deployment #9"),
                          ("dep-nope", "deployment 'dep-nope' not found"), ("echo@qa", "no environment 'qa'")):
        response = evals_api.post("/api/v1/evals/runs", json={"suite": "arith", "target": target})
        assert response.status_code == 404 and words in response.json()["error"]["message"], target
    response = evals_api.post("/api/v1/evals/runs", json={"suite": "nope", "target": "echo"})
    assert response.status_code == 404 and "eval suite 'nope' not found" in response.json()["error"]["message"]


async def test_another_workspace_sees_none_of_it(evals_api, other_key, worker, model_server):
    first, _ = await two_deployments(evals_api)
    suite = create_suite(evals_api).json()
    run = evals_api.post("/api/v1/evals/runs", json={"suite": "arith", "target": first}).json()
    assert evals_api.get("/api/v1/evals/suites", key=other_key).json()["data"] == []
    assert evals_api.get("/api/v1/evals/runs", key=other_key).json()["data"] == []
    for path in (f"/api/v1/evals/suites/{suite['id']}", f"/api/v1/evals/runs/{run['id']}",
                 f"/api/v1/evals/runs/{run['id']}/results"):
        assert evals_api.get(path, key=other_key).status_code == 404, path
    # Its own suite by the same name is fine, and it cannot target our deployment.
    assert create_suite(Api(evals_api.client, other_key, evals_api.plane)).status_code == 201
    response = evals_api.post("/api/v1/evals/runs", json={"suite": "arith", "target": first}, key=other_key)
    assert response.status_code == 404
    gate = {"model": "echo", "number": 1, "suite": "arith", "min_score": 0.0, "candidate_run": run["id"]}
    assert evals_api.post("/api/v1/evals/gates", json=gate, key=other_key).status_code == 404
    assert evals_api.get("/api/v1/evals/runs", headers={}, key=None).status_code == 401


async def test_the_gate_refuses_a_worse_candidate_and_promotes_a_better_one(evals_api, worker, model_server):
    first, second = await two_deployments(evals_api)
    create_suite(evals_api, n=8)
    model_server.behaviour.update({first: "half", second: "wrong"})

    async def run_on(deployment_id: str) -> str:
        run = evals_api.post("/api/v1/evals/runs", json={"suite": "arith", "target": deployment_id}).json()
        await worker.run_pending()
        return run["id"]

    production_run, worse_run = await run_on(first), await run_on(second)
    gate = {"model": "echo", "number": 2, "suite": "arith", "min_score": 0.2, "no_regression": True,
            "candidate_run": worse_run, "baseline_run": production_run}
    refused = evals_api.post("/api/v1/evals/gates", json=gate)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "gate_failed"
    message = refused.json()["error"]["message"]
    assert "candidate 0.0000" in message and "production 0.5000" in message
    production = evals_api.get("/api/v1/models/echo/environments").json()["data"][0]
    assert production["deployment_id"] == first and production["pending_deployment_id"] is None

    missing = evals_api.post("/api/v1/evals/gates", json={**gate, "baseline_run": None})
    assert missing.status_code == 400 and "needs baseline_run" in missing.json()["error"]["message"]
    swapped = evals_api.post("/api/v1/evals/gates", json={**gate, "candidate_run": production_run})
    assert swapped.status_code == 409 and f"not deployment {second}" in swapped.json()["error"]["message"]

    model_server.behaviour[second] = "right"
    better_run = await run_on(second)
    accepted = evals_api.post("/api/v1/evals/gates", json={**gate, "candidate_run": better_run})
    assert accepted.status_code == 200, accepted.text
    body = accepted.json()
    assert body["promoted"] and body["candidate_mean"] == 1.0 and body["baseline_mean"] == 0.5
    assert body["promotion"]["deployment_id"] == second
    production = evals_api.get("/api/v1/models/echo/environments").json()["data"][0]
    assert second in (production["deployment_id"], production["pending_deployment_id"])


def test_without_the_eval_services_uploads_answer_503(api):
    response = api.post("/api/v1/evals/suites", json={"name": "x", "items": items(1), "graders": GRADERS})
    assert response.status_code == 503 and response.json()["error"]["code"] == "evals_unavailable"
