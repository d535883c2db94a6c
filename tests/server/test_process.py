"""slipway.server.process: the replica process lifecycle, from the outside.

Port file, readiness during a slow load, drain by POST /drain and by SIGTERM with work in flight,
exit codes, and the traceback of a load() that raised.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx

from slipway.server.process import write_port_file
from slipway.spec.replica import EXIT_LOAD_FAILED
from tests.server.conftest import write_package

SLOW = """
    import pathlib, time

    class Model:
        def load(self):
            time.sleep(float((pathlib.Path(__file__).parent / "load_seconds").read_text()))

        def predict(self, request):
            time.sleep(request.get("sleep", 0))
            return {"slept": request.get("sleep", 0)}
"""


def slow_package(tmp_path, load_seconds: float = 0.0):
    folder = write_package(tmp_path / "slow", "name: slow\nkind: custom\n", SLOW)
    (folder / "load_seconds").write_text(str(load_seconds))
    return folder


def post_in_background(url: str, body: dict) -> tuple[threading.Thread, list[httpx.Response]]:
    responses: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: responses.append(httpx.post(url, json=body, timeout=30)))
    thread.start()
    return thread, responses


def wait_in_flight(http: httpx.Client, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while http.get("/stats").json()["in_flight"] != count:
        assert time.monotonic() < deadline, f"in_flight never reached {count}"
        time.sleep(0.02)


def assert_refused_as_draining(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    error = response.json()["error"]
    assert error["code"] == "draining" and "draining" in error["message"]


def test_port_file_is_written_whole(tmp_path):
    target = tmp_path / "run" / "replica.port"
    write_port_file(target, 43210)
    assert target.read_text() == "43210"
    write_port_file(target, 5)  # replaced, not appended or left half-written
    assert target.read_text() == "5"
    assert [p.name for p in target.parent.iterdir()] == ["replica.port"]


def test_listens_at_once_and_is_ready_only_after_load(tmp_path, start_replica):
    replica = start_replica(slow_package(tmp_path, load_seconds=1.5))
    replica.wait_port()
    with replica.client() as http:
        assert http.get("/health/live").status_code == 200
        ready = http.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["state"] == "loading"
        refused = http.post("/predict", json={})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "loading"
        # Still loading while it answers: the port file came before the load, not after it.
        assert http.get("/stats").json()["state"] == "loading"
        replica.wait_ready()
        assert http.post("/predict", json={}).json() == {"slept": 0}


def test_post_drain_lets_in_flight_work_finish_and_refuses_new_work(tmp_path, start_replica):
    replica = start_replica(slow_package(tmp_path))
    replica.wait_ready()
    with replica.client() as http:
        slow, responses = post_in_background(f"{replica.url}/predict", {"sleep": 1.0})
        wait_in_flight(http, 1)
        drained = http.post("/drain")
        assert drained.status_code == 200 and drained.json() == {"draining": True, "in_flight": 1}
        assert_refused_as_draining(http.post("/predict", json={}))
        assert http.get("/health/ready").status_code == 503
        assert http.get("/health/live").status_code == 200
        slow.join()
        assert responses[0].status_code == 200 and responses[0].json() == {"slept": 1.0}
        stats = http.get("/stats").json()
        assert stats["draining"] is True and stats["in_flight"] == 0 and stats["state"] == "draining"
    assert replica.process.poll() is None  # draining is not exiting: the backend sends SIGTERM for that


def test_sigterm_drains_then_exits_zero(tmp_path, start_replica):
    replica = start_replica(slow_package(tmp_path))
    replica.wait_ready()
    with replica.client() as http:
        slow, responses = post_in_background(f"{replica.url}/predict", {"sleep": 1.5})
        wait_in_flight(http, 1)
        replica.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 2
        while http.get("/health/ready").status_code != 503:  # the signal is handled on the loop
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert_refused_as_draining(http.post("/predict", json={}))
        assert replica.process.poll() is None, "exited with a request still in flight"
    slow.join()
    assert responses[0].status_code == 200 and responses[0].json() == {"slept": 1.5}
    assert replica.wait_exit(10) == 0
    assert "draining" in replica.stderr()


def test_sigterm_exits_after_the_drain_timeout_even_with_work_in_flight(tmp_path, start_replica):
    replica = start_replica(slow_package(tmp_path), "--drain-timeout", "0.3")
    replica.wait_ready()
    with replica.client() as http:
        post_in_background(f"{replica.url}/predict", {"sleep": 5})
        wait_in_flight(http, 1)
        sent = time.monotonic()
        replica.process.send_signal(signal.SIGTERM)
        assert replica.wait_exit(10) == 0
        assert time.monotonic() - sent < 4, "waited for the request instead of the drain timeout"
    assert "drain timeout" in replica.stderr()


def test_load_raising_exits_3_with_the_traceback_on_stderr(tmp_path, start_replica):
    package = write_package(tmp_path / "broken", "name: broken\nkind: custom\n", """
        class Model:
            def load(self):
                raise RuntimeError("weights are corrupt: xyz123")
            def predict(self, request):
                return request
    """)
    replica = start_replica(package)
    assert replica.wait_exit(20) == EXIT_LOAD_FAILED == 3
    stderr = replica.stderr()
    assert "Traceback (most recent call last)" in stderr
    assert "RuntimeError: weights are corrupt: xyz123" in stderr
    assert "in load" in stderr  # the user's frame is in it


def test_invalid_package_exits_3_with_the_problems(tmp_path, start_replica):
    package = write_package(tmp_path / "invalid", "name: Bad_Name\nkind: custom\nreplicas: 2\n", "class Model: ...\n")
    replica = start_replica(package)
    assert replica.wait_exit(20) == EXIT_LOAD_FAILED
    assert "replicas: unknown field" in replica.stderr() and "name" in replica.stderr()


def test_llm_package_without_its_weights_exits_3_naming_them(tmp_path, start_replica):
    package = write_package(tmp_path / "llm", "name: bot\nkind: llm\nweights: ./w\n")
    replica = start_replica(package)
    assert replica.wait_exit(20) == EXIT_LOAD_FAILED
    assert "weights './w'" in replica.stderr() and "does not exist" in replica.stderr()


def test_logs_are_json_lines_carrying_the_replica_id(tmp_path, start_replica):
    replica = start_replica(slow_package(tmp_path))
    replica.wait_ready()
    replica.process.send_signal(signal.SIGTERM)
    assert replica.wait_exit(10) == 0
    lines = [json.loads(line) for line in replica.stderr().splitlines() if line.startswith("{")]
    assert lines and all(line["replica_id"] == "r-test-0" for line in lines)
    assert any(line["msg"] == "model loaded" for line in lines)
    assert not any("color_message" in line for line in lines)
