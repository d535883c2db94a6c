"""slipway.server.app: every route of a replica, over real HTTP to a `python -m slipway.server`.

One replica serves the whole module: a custom model with a few behaviours picked by the request.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import launch_replica, write_package

BEHAVIOURS = """
    import asyncio, time

    class Model:
        def predict(self, request):
            if not isinstance(request, dict):
                return {"echo": request}
            if "sleep" in request:
                time.sleep(request["sleep"])
            if request.get("raise"):
                raise ValueError("the model cannot do " + request["raise"])
            if request.get("stream"):
                return self.stream(request)
            return {"echo": request}

        def stream(self, request):
            for i in range(request.get("n", 3)):
                yield {"i": i}
            if request.get("fail_after"):
                raise RuntimeError("stream broke at the end")
            if request.get("text"):
                yield "plain\\ntext"
"""


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("replica")
    package = write_package(workdir / "behaviours", "name: behaviours\nkind: custom\n", BEHAVIOURS)
    replica = launch_replica(package, workdir, "r-app", "--max-body-bytes", "65536")
    replica.wait_ready()
    yield replica
    replica.stop()


@pytest.fixture
def http(replica):
    with replica.client() as client:
        yield client


def assert_openai_error(response: httpx.Response, status: int, words: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert words in error["message"], error
    return error


def sse_events(text: str) -> list[str]:
    return [event for event in text.split("\n\n") if event]


def test_health(http):
    assert http.get("/health/live").status_code == 200
    ready = http.get("/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "state": "ready"}


def test_predict_round_trips_json(http):
    response = http.post("/predict", json={"text": "hi", "n": [1, 2.5, None]})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"echo": {"text": "hi", "n": [1, 2.5, None]}}


def test_predict_accepts_any_json_value(http):
    assert http.post("/predict", json=[1, "two"]).json() == {"echo": [1, "two"]}


def test_request_id_is_echoed(http):
    response = http.post("/predict", json={}, headers={"x-request-id": "req-123"})
    assert response.headers["x-request-id"] == "req-123"


def test_streaming_is_sse_ending_with_done(http):
    with http.stream("POST", "/predict", json={"stream": True, "n": 3, "text": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        body = response.read().decode()
    events = sse_events(body)
    assert events[:3] == ['data: {"i":0}', 'data: {"i":1}', 'data: {"i":2}']
    assert events[3] == "data: plain\ndata: text"  # a multi-line string is one event, one data line each
    assert events[-1] == "data: [DONE]"


def test_stream_failing_midway_ends_with_an_error_event(http):
    body = http.post("/predict", json={"stream": True, "n": 2, "fail_after": True}).text
    events = sse_events(body)
    assert events[:2] == ['data: {"i":0}', 'data: {"i":1}']
    assert events[-1].startswith("event: error\ndata: ")
    error = orjson.loads(events[-1].split("data: ", 1)[1])["error"]
    assert "stream broke at the end" in error["message"]
    assert "[DONE]" not in body


def test_model_exception_is_a_500_with_its_message_and_the_server_lives_on(http, replica):
    error = assert_openai_error(http.post("/predict", json={"raise": "that"}), 500, "the model cannot do that")
    assert error["type"] == "server_error" and "ValueError" in error["message"]
    assert http.post("/predict", json={"after": "error"}).status_code == 200
    assert replica.process.poll() is None
    assert "Traceback" in replica.stderr() or "ValueError" in replica.stderr()


def test_invalid_json_is_a_400_saying_so(http):
    error = assert_openai_error(http.post("/predict", content=b"{not json"), 400, "not valid JSON")
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_json"
    assert_openai_error(http.post("/predict", content=b""), 400, "empty")


def test_body_over_the_limit_is_a_413(http):
    assert_openai_error(http.post("/predict", content=b"[" + b"1," * 40000 + b"1]"), 413, "65536 bytes")


def test_embeddings_on_a_custom_model_is_a_404_in_openai_shape(http):
    error = assert_openai_error(http.post("/v1/embeddings", json={"model": "m", "input": "x"}), 404,
                                "does not serve /v1/embeddings")
    assert "kind 'custom'" in error["message"]


def test_embeddings_body_is_validated_first_with_the_field_named(http):
    error = assert_openai_error(http.post("/v1/embeddings", json={"input": "x"}), 400, "model")
    assert error["param"] == "model"
    assert_openai_error(http.post("/v1/embeddings", json=["x"]), 400, "JSON object")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_llm_routes_answer_404_naming_the_llm_runtime(http, path):
    error = assert_openai_error(http.post(path, json={"model": "m", "messages": []}), 404, "llm runtime")
    assert path in error["message"]


def test_unknown_route_and_wrong_method(http):
    assert_openai_error(http.get("/nope"), 404, "no route GET /nope")
    assert_openai_error(http.get("/predict"), 405, "takes POST")


def test_stats(http):
    http.post("/predict", json={})
    stats = http.get("/stats").json()
    assert stats["kind"] == "custom" and stats["model"] == "behaviours" and stats["replica_id"] == "r-app"
    assert stats["ready"] is True and stats["draining"] is False and stats["state"] == "ready"
    assert stats["in_flight"] == 0 and stats["requests_total"] >= 1
    assert stats["predict_total"] >= 1 and "running" in stats and "waiting" in stats


def test_in_flight_is_visible_in_stats_and_metrics(http, replica):
    slow = threading.Thread(target=lambda: httpx.post(f"{replica.url}/predict", json={"sleep": 0.6}, timeout=10))
    slow.start()
    try:
        deadline = time.monotonic() + 5
        while http.get("/stats").json()["in_flight"] != 1:
            assert time.monotonic() < deadline, "the slow request never showed as in flight"
            time.sleep(0.02)
        samples = {s.name: s.value for f in text_string_to_metric_families(http.get("/metrics").text)
                   for s in f.samples}
        assert samples["slipway_replica_in_flight"] == 1
    finally:
        slow.join()


def test_a_client_leaving_before_the_answer_ends_its_request_at_once(http, replica):
    closed_before = _requests(http).get(("predict", "499"), 0)
    body = b'{"sleep": 1.0}'
    with socket.create_connection(("127.0.0.1", replica.port)) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
        deadline = time.monotonic() + 5
        while http.get("/stats").json()["in_flight"] != 1:
            assert time.monotonic() < deadline, "the slow request never showed as in flight"
            time.sleep(0.01)
    left_at = time.monotonic()
    while http.get("/stats").json()["in_flight"] != 0:
        assert time.monotonic() - left_at < 0.5, "the request stayed in flight after its client left"
        time.sleep(0.01)
    assert _requests(http)[("predict", "499")] == closed_before + 1


def test_metrics_parse_and_count_requests_by_route_and_status(http):
    before = _requests(http)
    http.post("/predict", json={})
    http.post("/predict", content=b"{bad")
    http.post("/v1/embeddings", json={"model": "m", "input": "x"})
    after = _requests(http)
    assert after[("predict", "200")] - before.get(("predict", "200"), 0) == 1
    assert after[("predict", "400")] - before.get(("predict", "400"), 0) == 1
    assert after[("embeddings", "404")] - before.get(("embeddings", "404"), 0) == 1

    families = {f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)}
    assert families["slipway_replica_request_duration_seconds"].type == "histogram"
    counts = [s for s in families["slipway_replica_request_duration_seconds"].samples
              if s.name.endswith("_count") and s.labels["route"] == "predict"]
    assert counts and counts[0].value >= 2
    assert families["slipway_replica_in_flight"].type == "gauge"
    ready = [s.value for s in families["slipway_replica_ready"].samples]
    assert ready == [1.0]


def _requests(http) -> dict[tuple[str, str], float]:
    return {(s.labels["route"], s.labels["status"]): s.value
            for f in text_string_to_metric_families(http.get("/metrics").text)
            if f.name == "slipway_replica_requests"
            for s in f.samples if s.name == "slipway_replica_requests_total"}


def test_stream_failing_before_its_first_chunk_is_a_plain_500(http):
    error = assert_openai_error(http.post("/predict", json={"stream": True, "n": 0, "fail_after": True}), 500,
                                "stream broke at the end")
    assert error["code"] == "model_error"
