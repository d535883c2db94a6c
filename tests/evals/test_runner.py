"""Eval runs: sampling through a real HTTP server with the openai client, grading, summaries, the worker."""

from __future__ import annotations

import asyncio

import pytest

from slipway.evals.catalog import Sampling, SuiteCatalog
from slipway.evals.graders import ExactMatch, Includes
from slipway.evals.runner import EvalWorker, GatewaySampler, run_items, summarise_outcomes
from slipway.evals.suite import parse_items
from tests.control.routes.learning import ServerThread
from tests.evals.model_server import ModelServer, items


@pytest.fixture
def home(tmp_path):
    return tmp_path


@pytest.fixture
def store(home):
    from slipway.store import Store

    opened = Store.open(None, home)
    yield opened
    opened.close()


@pytest.fixture
def server():
    model_server = ModelServer({"bot": "right", "bot@dev": "half", "dep-good": "right", "dep-bad": "wrong",
                                "dep-down": "down"})
    with ServerThread(model_server) as thread:
        model_server.url = thread.url
        yield model_server


def sampler(server, kind: str, target: str, **sampling) -> GatewaySampler:
    return GatewaySampler(server.url, "sk-test", kind, target, Sampling(**sampling))


def run(coroutine):
    return asyncio.run(coroutine)


def test_environment_targets_use_chat_completions_with_temperature_zero(server):
    async def go():
        ask = sampler(server, "environment", "bot")
        try:
            return await ask([{"role": "user", "content": "What is 3 plus 3?"}])
        finally:
            await ask.close()

    assert run(go()) == "6"
    path, body = server.requests[-1]
    assert path == "/v1/chat/completions" and body["model"] == "bot" and body["temperature"] == 0.0
    assert "max_tokens" not in body


def test_deployment_targets_use_the_deployments_predict_route_with_the_chat_body(server):
    async def go():
        ask = sampler(server, "deployment", "dep-good", max_tokens=7)
        try:
            return await ask([{"role": "user", "content": "What is 4 plus 4?"}])
        finally:
            await ask.close()

    assert run(go()) == "8"
    path, body = server.requests[-1]
    assert path == "/deployments/dep-good/predict" and body["messages"][0]["content"] == "What is 4 plus 4?"
    assert body["max_tokens"] == 7


def test_a_failing_target_scores_zero_with_the_error_and_the_run_goes_on(server):
    async def go():
        ask = sampler(server, "deployment", "dep-down")
        ask.client = ask.client.with_options(max_retries=0)
        try:
            return await run_items(parse_items(items(3)), [ExactMatch()], ask)
        finally:
            await ask.close()

    outcomes = run(go())
    assert [o.score for o in outcomes] == [0.0, 0.0, 0.0]
    assert all("503" in o.error and "no replica" in o.error for o in outcomes)
    assert summarise_outcomes(outcomes, ["exact"])["num_errors"] == 3


def test_concurrency_is_bounded_and_outcomes_come_back_in_item_order():
    in_flight = peak = 0

    async def slow(messages):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return "x"

    outcomes = run(run_items(parse_items(items(12)), [Includes()], slow, concurrency=3))
    assert peak == 3 and [o.index for o in outcomes] == list(range(12))


def test_summary_has_mean_pass_rate_and_intervals_overall_and_per_grader(server):
    async def go():
        ask = sampler(server, "environment", "bot@dev")
        try:
            return await run_items(parse_items(items(8)), [ExactMatch(), Includes(name="inc")], ask)
        finally:
            await ask.close()

    outcomes = run(go())
    summary = summarise_outcomes(outcomes, ["exact", "inc"])
    # "half": right when 2i is a multiple of 4, i.e. for i = 0, 2, 4, 6.
    assert [o.passed for o in outcomes] == [True, False] * 4
    assert summary["mean_score"] == 0.5 and summary["pass_rate"] == 0.5 and summary["num_items"] == 8
    low, high = summary["pass_rate_ci"]
    assert 0.0 < low < 0.5 < high < 1.0
    assert summary["graders"]["exact"]["mean_score"] == 0.5 and "Wilson" in summary["intervals"]
    assert "expected '2', got 'I do not know'" in outcomes[1].record().rationale


def test_a_judge_whose_model_is_down_fails_the_grade_not_the_run(server, store, home):
    catalog = SuiteCatalog(store, home)
    workspace = store.workspaces.create("w", now=0.0)
    suite = catalog.create(workspace.id, name="judged", items=items(2),
                           graders=[{"type": "llm_judge", "model": "dep-down"}])
    run_row = store.evals.create_run(workspace.id, suite_id=suite.id, target_kind="deployment", target="dep-good",
                                     now=1.0)
    worker = EvalWorker(store, home, gateway_url=server.url, key_for=lambda _ws: "sk-test")
    finished = run(worker.execute(run_row))
    assert finished.status == "succeeded" and finished.summary["mean_score"] == 0.0
    results = store.evals.list_results(workspace.id, run_row.id)
    assert all("the judge could not answer" in r.rationale for r in results)
