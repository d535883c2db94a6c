"""The gateway's routes end to end over real HTTP: auth, resolution, limits, errors, request ids."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.gateway.conftest import ADMIN_A, ADMIN_B, INVOKE_A, KEYS, LIMITED_A, METRICS_A, world


@pytest.fixture
def one(replicas, gateway):
    (replica,) = replicas(1)
    return gateway(world([replica.url])), replica


def assert_error(response: httpx.Response, status: int, words: str = "") -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert words.lower() in error["message"].lower(), error
    assert response.headers["x-request-id"]
    return error


def test_predict_reaches_the_production_replica(one):
    gw, replica = one
    with gw.client() as http:
        response = http.post("/models/echo/predict", json={"text": "hi"})
    assert response.status_code == 200
    assert response.json()["replica"] == replica.replica_id
    assert response.json()["echo"] == {"text": "hi"}
    assert response.headers["content-type"] == "application/json"


def test_every_route_of_another_workspace_is_404_like_a_missing_model(one):
    gw, replica = one
    with gw.client(ADMIN_B) as b:
        # ws-b has its own 'echo' (d-b-echo); it must never see ws-a's deployments or environments.
        for path in ["/models/drafts/predict", "/models/embedder/environments/production/predict",
                     "/deployments/d-echo/predict", "/deployments/d-echo-dev/predict"]:
            assert_error(b.post(path, json={}), 404, "does not exist")
        assert_error(b.post("/v1/embeddings", json={"model": "embedder", "input": "x"}), 404, "embedder")
        assert_error(b.post("/v1/chat/completions", json={"model": "echo@development", "messages": []}), 404)
        assert_error(b.post("/v1/completions", json={"model": "drafts", "prompt": "x"}), 404, "drafts")
        assert [m["id"] for m in b.get("/v1/models").json()["data"]] == ["echo"]
    with gw.client(ADMIN_A) as a:
        assert_error(a.post("/deployments/d-b-echo/predict", json={}), 404, "does not exist")
        assert_error(a.post("/models/nope/predict", json={}), 404, "'nope'")
        assert a.post("/deployments/d-echo/predict", json={}).status_code == 200
    assert replica.requests == 1


def test_model_resolution_defaults_and_environments(one):
    gw, _ = one
    with gw.client() as http:
        # drafts has only a development deployment: the bare name falls back to it (d-drafts, unreachable URL).
        assert_error(http.post("/models/drafts/predict", json={}), 503, "could be reached")
        assert_error(http.post("/models/drafts/environments/production/predict", json={}), 404, "development")
        assert_error(http.post("/v1/chat/completions", json={"model": "echo@staging"}), 404, "staging")
        ids = [m["id"] for m in http.get("/v1/models").json()["data"]]
    assert ids == ["drafts", "drafts@development", "echo", "echo@development", "embedder"]


def test_missing_unknown_and_revoked_keys_get_401(one):
    gw, _ = one
    with gw.client(None) as anonymous:
        error = assert_error(anonymous.post("/models/echo/predict", json={}), 401, "Authorization: Bearer")
        assert error["type"] == "authentication_error"
    with gw.client("sk-slw-" + "z" * 40) as stranger:
        assert_error(stranger.post("/models/echo/predict", json={}), 401, "unknown or revoked")
    with httpx.Client(base_url=gw.url, headers={"Api-Key": INVOKE_A}) as api_key_header:
        assert api_key_header.post("/models/echo/predict", json={}).status_code == 200
        # Revoked: the next snapshot no longer lists the key.
        gw.source.publish(world(gw.source.current().deployments[0], version=2,
                                keys=[k for k in KEYS if k.key_id != "k-invoke-a"]))
        deadline = time.monotonic() + 5
        while (response := api_key_header.post("/models/echo/predict", json={})).status_code == 200:
            assert time.monotonic() < deadline, "the revoked key still works"
            time.sleep(0.01)
        assert_error(response, 401, "revoked")


def test_scopes_and_model_limited_keys(one):
    gw, _ = one
    with gw.client(METRICS_A) as metrics:
        assert_error(metrics.post("/models/echo/predict", json={}), 403, "invoke or admin")
    with gw.client(LIMITED_A) as limited:
        assert_error(limited.post("/models/echo/predict", json={}), 403, "only embedder")
        assert_error(limited.post("/models/nope/predict", json={}), 404)  # unknown stays 404
        assert [m["id"] for m in limited.get("/v1/models").json()["data"]] == ["embedder"]


def test_body_limits_by_header_and_by_streamed_size(replicas, gateway):
    (replica,) = replicas(1)
    gw = gateway(world([replica.url]), max_body_bytes=1000)
    with gw.client() as http:
        assert_error(http.post("/models/echo/predict", content=b"x" * 1001), 413, "larger than 1000 bytes")

        def chunks():  # no Content-Length: the size is counted as the body streams in
            for _ in range(5):
                yield b'"' + b"y" * 300 + b'"'
        response = http.post("/models/echo/predict", content=chunks())
        assert "content-length" not in response.request.headers
        assert_error(response, 413, "larger than")
        assert http.post("/models/echo/predict", content=b'"' + b"y" * 900 + b'"').status_code == 200
    assert replica.requests == 1


def test_invalid_json_and_missing_model_get_400(one):
    gw, replica = one
    with gw.client() as http:
        for path in ["/v1/embeddings", "/v1/chat/completions", "/v1/completions", "/models/echo/predict"]:
            error = assert_error(http.post(path, content=b"{not json"), 400, "not valid JSON")
            assert error["code"] == "invalid_json"
        assert_error(http.post("/v1/embeddings", json={"input": "x"}), 400, "'model' field")
        assert_error(http.post("/v1/embeddings", json=["model"]), 400, "'model' field")
    assert replica.requests == 0


def test_request_id_is_echoed_when_sane_and_generated_otherwise(one):
    gw, replica = one
    with gw.client() as http:
        mine = http.post("/models/echo/predict", json={}, headers={"X-Request-Id": "client-123"})
        assert mine.headers["x-request-id"] == "client-123"
        assert mine.json()["request_id"] == "client-123"  # the replica sees the same id
        generated = http.post("/models/echo/predict", json={}, headers={"X-Request-Id": "bad id\twith spaces"})
        assert generated.headers["x-request-id"].startswith("req-")
        assert generated.json()["request_id"] == generated.headers["x-request-id"]
        assert http.get("/nowhere").headers["x-request-id"].startswith("req-")
        assert http.get("/health").headers["x-request-id"]
    records = gw.sink.wait_for(2)
    # Usage is keyed by ids the gateway makes: a client reusing its ids cannot dedupe its usage away.
    assert "client-123" not in {r.request_id for r in records}
    assert generated.headers["x-request-id"] in {r.request_id for r in records}


def test_unknown_route_and_wrong_method(one):
    gw, _ = one
    with gw.client() as http:
        assert_error(http.get("/v2/things"), 404, "no route GET /v2/things")
        assert_error(http.post("/models/echo/explode", json={}), 404, "no route")
        error = assert_error(http.get("/v1/embeddings"), 405, "takes POST")
        assert error["code"] == "method_not_allowed"


def test_health_and_load(one):
    gw, _ = one
    with httpx.Client(base_url=gw.url) as http:
        assert http.get("/health").json() == {"status": "ok", "snapshot_version": 1}
    with gw.client(ADMIN_A) as a:
        load = a.get("/internal/load").json()
        assert set(load["deployments"]) == {"d-echo", "d-echo-dev", "d-emb", "d-drafts"}
        assert load["deployments"]["d-echo"] == {"in_flight": 0, "queued": 0}
    with gw.client(INVOKE_A) as invoke:
        assert_error(invoke.get("/internal/load"), 403, "admin scope")


def test_load_counts_requests_in_flight(replicas, gateway):
    import threading

    (replica,) = replicas(1)
    gw = gateway(world([replica.url]), operator_workspace_id="ws-b")
    def slow_request() -> None:
        with gw.client() as http:
            http.post("/models/echo/predict", json={"sleep": 0.5})

    slow = threading.Thread(target=slow_request)
    slow.start()
    try:
        deadline = time.monotonic() + 5
        with gw.client(ADMIN_A) as a:
            while a.get("/internal/load").json()["deployments"]["d-echo"]["in_flight"] != 1:
                assert time.monotonic() < deadline, "the slow request never showed as in flight"
                time.sleep(0.02)
        with gw.client(ADMIN_B) as operator:  # the operator workspace sees every deployment
            assert {"d-echo", "d-b-echo"} <= set(operator.get("/internal/load").json()["deployments"])
    finally:
        slow.join()
