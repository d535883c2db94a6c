"""The cold-start hold: requests for a deployment with no ready replica wait for one, bounded and timed."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.gateway.conftest import ADMIN_A, deployment, world

ASLEEP = deployment("d-echo", "echo", [])  # scaled to zero: no replica at all


def queued(gw, deployment_id: str = "d-echo") -> int:
    return gw.app.load()["deployments"].get(deployment_id, {}).get("queued", 0)


def wait_until(condition, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} never came true"
        time.sleep(0.01)


def publish(gw, snapshot) -> None:
    gw.source.publish(snapshot)
    wait_until(lambda: gw.app.table.version == snapshot.version, what=f"snapshot {snapshot.version} installed")


def in_background(call) -> Future:
    pool = ThreadPoolExecutor(1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    return future


def post_predict(gw, payload: dict | None = None, **kwargs) -> httpx.Response:
    with gw.client(**kwargs) as http:
        return http.post("/models/echo/predict", json=payload or {})


def test_a_held_request_is_served_once_a_ready_replica_is_published(replicas, gateway):
    (replica,) = replicas(1)
    demand: list[str] = []
    gw = gateway(world(ASLEEP), on_demand=demand.append, cold_start_timeout=10)
    answer = in_background(lambda: post_predict(gw, {"hello": 1}))
    wait_until(lambda: queued(gw) == 1, what="the request counted as queued")
    assert demand == ["d-echo"]  # the control plane was told at once
    assert gw.app.load()["deployments"]["d-echo"]["in_flight"] == 0

    starting = world(deployment("d-echo", "echo", [replica.url], ready=False), version=2)
    publish(gw, starting)  # a replica is starting: still held
    time.sleep(0.1)
    assert not answer.done() and queued(gw) == 1

    time.sleep(0.2)
    publish(gw, world([replica.url], version=3))
    response = answer.result(5)
    assert response.status_code == 200
    assert response.json()["echo"] == {"hello": 1} and response.json()["replica"] == replica.replica_id
    assert queued(gw) == 0

    (cold_start,) = gw.app.cold_starts()
    assert cold_start.deployment_id == "d-echo" and 0.3 <= cold_start.seconds < 5
    samples = {sample.name: sample for family in gw.app.metrics_registry.collect()
               for sample in family.samples if sample.labels.get("deployment") == "d-echo"}
    assert samples["slipway_gateway_cold_start_seconds_count"].value == 1
    assert samples["slipway_gateway_cold_start_seconds_sum"].value == pytest.approx(cold_start.seconds)
    # A request that found a ready replica is no cold start.
    assert post_predict(gw).status_code == 200
    assert len(gw.app.cold_starts()) == 1
    records = gw.sink.wait_for(2)
    assert {r.status_code for r in records} == {200}


def test_a_held_request_follows_its_environment_to_another_deployment(replicas, gateway):
    (replica,) = replicas(1)
    demand: list[str] = []
    gw = gateway(world(ASLEEP), on_demand=demand.append, cold_start_timeout=10)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=ADMIN_A, max_retries=0, timeout=10)
    answer = in_background(lambda: client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "hi"}]))
    wait_until(lambda: queued(gw) == 1, what="the request counted as queued")

    promoted = world(ASLEEP, version=2)  # production now points at d-new, which is starting
    promoted.models[0].environments["production"] = "d-new"
    promoted.deployments.append(deployment("d-new", "echo", [replica.url], ready=False))
    publish(gw, promoted)
    wait_until(lambda: queued(gw, "d-new") == 1 and queued(gw) == 0, what="the hold moved to d-new")
    assert demand == ["d-echo", "d-new"]

    ready = promoted.model_copy(deep=True)
    ready.version = 3
    ready.deployments[-1].replicas[0].ready = True
    publish(gw, ready)
    completion = answer.result(5)
    assert completion.choices[0].message.content == "hi"
    assert [c.deployment_id for c in gw.app.cold_starts()] == ["d-new"]
    (record,) = gw.sink.wait_for(1)
    assert (record.deployment_id, record.input_units, record.output_units) == ("d-new", 7, 3)


def test_no_replica_within_the_timeout_is_503_with_retry_after(gateway):
    gw = gateway(world(ASLEEP), cold_start_timeout=0.3, retry_after_seconds=2)
    started = time.monotonic()
    response = post_predict(gw)
    assert 0.3 <= time.monotonic() - started < 3
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    error = response.json()["error"]
    assert error["code"] == "cold_start_timeout" and error["type"] == "server_error"
    assert "no ready replica (none running" in error["message"] and "after waiting 0.3s" in error["message"]
    assert queued(gw) == 0
    assert gw.app.cold_starts() == []
    (record,) = gw.sink.wait_for(1)
    assert (record.status_code, record.input_units, record.output_units) == (503, 0, 0)


def test_a_full_queue_answers_429_that_openai_clients_retry(replicas, gateway):
    (replica,) = replicas(1)
    gw = gateway(world(ASLEEP), max_queued_per_deployment=2, cold_start_timeout=10, retry_after_seconds=1)
    held = [in_background(lambda: post_predict(gw)) for _ in range(2)]
    wait_until(lambda: queued(gw) == 2, what="two requests held")

    response = post_predict(gw)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "cold_start_queue_full")
    assert "2 requests are already waiting for model 'echo'" in error["message"]

    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=ADMIN_A, max_retries=0, timeout=10)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.response.headers["retry-after"] == "1"

    # The same client with retries waits out Retry-After and gets through once a replica is ready.
    patient = openai.OpenAI(base_url=gw.url + "/v1", api_key=ADMIN_A, max_retries=3, timeout=10)
    retried = in_background(lambda: patient.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "hi"}]))
    time.sleep(0.3)
    publish(gw, world([replica.url], version=2))
    assert [f.result(5).status_code for f in held] == [200, 200]
    assert retried.result(10).choices[0].message.content == "hi"
    assert queued(gw) == 0


def test_a_client_that_disconnects_while_held_leaves_the_queue_at_once(gateway):
    gw = gateway(world(ASLEEP), cold_start_timeout=30)
    with pytest.raises(httpx.ReadTimeout):
        with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {ADMIN_A}"}, timeout=0.3) as http:
            http.post("/models/echo/predict", json={})
    wait_until(lambda: queued(gw) == 0, timeout=2, what="the abandoned request left the queue")
    # Nothing was answered, so nothing is metered.
    time.sleep(0.2)
    assert gw.sink.records == {}


def test_failed_and_inactive_deployments_are_refused_at_once(gateway):
    snapshot = world(ASLEEP)
    snapshot.deployments[0].status = "failed"
    snapshot.deployments[1].status = "inactive"  # d-echo-dev
    snapshot.deployments[1].replicas = []
    gw = gateway(snapshot, cold_start_timeout=30)
    with gw.client() as http:
        failed = http.post("/models/echo/predict", json={})
        inactive = http.post("/models/echo/environments/development/predict", json={})
    assert failed.status_code == 503 and "failed to load" in failed.json()["error"]["message"]
    assert "slipway logs d-echo" in failed.json()["error"]["message"]
    assert inactive.status_code == 503 and "is inactive" in inactive.json()["error"]["message"]
    assert {failed.json()["error"]["code"], inactive.json()["error"]["code"]} == {"deployment_not_serving"}
    assert "retry-after" not in failed.headers

