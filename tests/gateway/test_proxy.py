"""Replica choice, retry, passive health and streaming, against real replica servers."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.conftest import deployment, world


def dead_url() -> str:
    """A 127.0.0.1 URL where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_only_ready_replicas_get_traffic(replicas, gateway):
    ready, starting = replicas(2)
    entry = deployment("d-echo", "echo", [ready.url, starting.url])
    entry.replicas[1].ready = False
    gw = gateway(world(entry))
    with gw.client() as http:
        answered = Counter(http.post("/models/echo/predict", json={}).json()["replica"] for _ in range(20))
    assert answered == {ready.replica_id: 20}
    assert starting.requests == 0


def test_no_ready_replica_with_holding_off_is_503_at_once(replicas, gateway):
    (starting,) = replicas(1)
    entry = deployment("d-echo", "echo", [starting.url], ready=False)
    gw = gateway(world(entry), retry_after_seconds=2, max_queued_per_deployment=0)
    with gw.client() as http:
        response = http.post("/models/echo/predict", json={})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert "no ready replica (1 starting)" in response.json()["error"]["message"]
    assert response.json()["error"]["code"] == "no_ready_replica"


def test_least_load_spreads_sequential_and_concurrent_requests(replicas, gateway):
    fakes = replicas(3)
    gw = gateway(world([f.url for f in fakes]))
    with gw.client() as http:
        sequential = Counter(http.post("/models/echo/predict", json={}).json()["replica"] for _ in range(30))
    assert sequential == {f.replica_id: 10 for f in fakes}

    # Nine slow requests at once: least_load puts three on each replica, never more.
    results: list[str] = []
    all_connected = threading.Barrier(9)

    def call() -> None:
        with gw.client() as client:
            all_connected.wait(10)  # sent together, even when threads start slowly on a busy machine
            results.append(client.post("/models/echo/predict", json={"sleep": 1.0}).json()["replica"])

    threads = [threading.Thread(target=call) for _ in range(9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(results) == {f.replica_id: 3 for f in fakes}
    assert max(f.max_in_flight for f in fakes) == 3


def test_a_refusing_replica_costs_no_request(replicas, gateway):
    (alive,) = replicas(1)
    gw = gateway(world([dead_url(), alive.url]), unhealthy_cooldown=60)
    with gw.client() as http:
        statuses = [http.post("/models/echo/predict", json={}).status_code for _ in range(40)]
    assert statuses == [200] * 40
    assert alive.requests == 40


def test_passive_health_skips_a_failed_replica_until_cooldown_or_it_turns_ready_again(replicas, gateway):
    (alive,) = replicas(1)
    down = dead_url()
    gw = gateway(world([down, alive.url]), unhealthy_cooldown=60)
    tracker = gw.app.tracker
    with gw.client() as http:
        for _ in range(4):  # rotation reaches the dead one within two requests
            assert http.post("/models/echo/predict", json={}).status_code == 200
        assert tracker.is_marked_down("d-echo-r0", time.monotonic())
        marked_at_requests = alive.requests
        for _ in range(10):
            http.post("/models/echo/predict", json={})
        assert alive.requests == marked_at_requests + 10
        # A newer snapshot in which the replica turns ready again (restarted) clears the mark.
        restarting = world([down, alive.url], version=2)
        restarting.deployments[0].replicas[0].ready = False
        for snapshot in (restarting, world([down, alive.url], version=3)):
            gw.source.publish(snapshot)
            deadline = time.monotonic() + 5
            while gw.app.table.version != snapshot.version:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        assert not tracker.is_marked_down("d-echo-r0", time.monotonic())


def test_a_draining_replica_503_is_retried_on_another(replicas, gateway):
    draining, alive = replicas(2)
    draining.draining = True
    gw = gateway(world([draining.url, alive.url]))
    with gw.client() as http:
        answers = [http.post("/models/echo/predict", json={}) for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 6
    assert {a.json()["replica"] for a in answers} == {alive.replica_id}
    assert draining.requests >= 1


def test_without_another_replica_the_503_passes_through(replicas, gateway):
    (draining,) = replicas(1)
    draining.draining = True
    gw = gateway(world([draining.url]))
    with gw.client() as http:
        response = http.post("/models/echo/predict", json={})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "draining"


def test_a_stream_is_relayed_chunk_by_chunk_as_it_arrives(replicas, gateway):
    (replica,) = replicas(1)
    gw = gateway(world([replica.url]))
    with gw.client() as http:
        with http.stream("POST", "/v1/chat/completions", json={"model": "echo", "stream": True}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            chunks = response.iter_raw()
            first = next(chunks)
            assert first == b'data: {"n": 1}\n\n'
            assert not replica.stream_finished.is_set(), "the first chunk waited for the whole stream"
            replica.release.set()
            rest = b"".join(chunks)
    assert rest.endswith(b"data: [DONE]\n\n") and b'"n": 2' in rest
    (record,) = gw.sink.wait_for(1)
    assert (record.route, record.input_units, record.output_units) == ("chat.completions", 5, 2)


def test_a_client_leaving_a_stream_frees_the_replica_slot(replicas, gateway):
    (replica,) = replicas(1)
    gw = gateway(world([replica.url]))
    with gw.client() as http:
        with http.stream("POST", "/v1/chat/completions", json={"model": "echo", "stream": True}) as response:
            next(response.iter_raw())
    deadline = time.monotonic() + 5
    while gw.app.tracker.in_flight:  # the replica is still holding its stream open
        assert time.monotonic() < deadline, "in-flight count never dropped after the client left"
        time.sleep(0.01)
    assert not replica.stream_finished.is_set()
    replica.release.set()
    with httpx.Client(base_url=gw.url, headers={"Authorization": "Bearer " + "sk-slw-" + "a" * 40}) as http:
        assert http.post("/models/echo/predict", json={}).status_code == 200


def test_prefix_aware_keeps_a_conversation_on_one_replica(replicas, gateway):
    fakes = replicas(3)
    gw = gateway(world(deployment("d-echo", "echo", [f.url for f in fakes], routing="prefix_aware")))
    system = "You are a support bot for a shipping company. " * 8
    with gw.client() as http:
        for user in range(3):
            served = set()
            history = [{"role": "system", "content": system + f"customer {user}"}]
            for turn in range(4):
                history.append({"role": "user", "content": f"question {turn} " * 20})
                served.add(http.post("/models/echo/predict", json={"messages": history}).json()["replica"])
            assert len(served) == 1, f"conversation {user} spread over {served}"


def test_answered_requests_and_failed_attempts_are_counted_in_the_gateway_metrics(replicas, gateway):
    """slipway_gateway_* families follow the traffic: one 2xx per answer, its duration, a failed attempt
    on a dead replica counted as an upstream error and the retry that followed."""
    (replica,) = replicas(1)
    gw = gateway(world(["http://127.0.0.1:9", replica.url]))
    with gw.client() as http:
        for _ in range(4):
            assert http.post("/models/echo/predict", json={}).status_code == 200
    page = gw.app.metrics.render().decode()
    samples = [s for family in text_string_to_metric_families(page) for s in family.samples
               if s.labels.get("deployment") == "d-echo"]

    def value(name: str, **labels: str) -> float:
        return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())

    assert value("slipway_gateway_requests_total", status_class="2xx", model="echo") == 4
    assert value("slipway_gateway_request_duration_seconds_count") == 4
    assert value("slipway_gateway_in_flight") == 0
    # The dead replica at :9 refuses connections: each time it is picked, one error and one retry.
    errors = value("slipway_gateway_upstream_errors_total", kind="connect")
    assert errors >= 1 and value("slipway_gateway_retries_total") == errors
