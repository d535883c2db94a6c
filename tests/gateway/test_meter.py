"""Usage metering: units from responses, records in the sink, and no record lost to a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from slipway.gateway.meter import units_from_body
from slipway.store import Store
from tests.gateway.conftest import ADMIN_A, world

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("body, units", [
    (b'{"data": [], "usage": {"prompt_tokens": 12, "total_tokens": 12}}', (12, 0)),
    (b'{"usage": {"prompt_tokens": 3, "completion_tokens": 4, "prompt_tokens_details": {"cached": 1}}}', (3, 4)),
    (b'{"usage" :\n {"prompt_tokens": 1, "completion_tokens": null}}', (1, 0)),
    # The last usage object counts; "usage": null in a stream chunk is skipped.
    (b'{"echo": {"usage": {"prompt_tokens": 1}}, "usage": {"prompt_tokens": 9, "completion_tokens": 1}}', (9, 1)),
    (b'data: {"usage": {"prompt_tokens": 2, "completion_tokens": 5}}\n\ndata: {"usage": null}\n\n', (2, 5)),
    (b'{"result": 1}', None),
    (b'{"usage": {"prompt_tokens": "many"}}', None),
    (b'{"usage": {"prompt_tokens": 1', None),
])
def test_units_from_body(body, units):
    assert units_from_body(body) == units


def test_one_record_per_request_with_units_from_the_response(replicas, gateway):
    (replica,) = replicas(1)
    snapshot = world([replica.url])
    snapshot.deployments[2].replicas[0].url = replica.url  # embedder -> the same fake replica
    gw = gateway(snapshot)
    with gw.client() as http:
        assert http.post("/v1/embeddings", json={"model": "embedder", "input": ["a", "b", "c"]}).status_code == 200
        assert http.post("/v1/chat/completions", json={"model": "echo", "messages": []}).status_code == 200
        predict = http.post("/models/echo/predict", json={"x": 1}, headers={"X-Request-Id": "mine"})
        assert http.post("/models/nope/predict", json={}).status_code == 404  # not metered: no model
    records = {r.route: r for r in gw.sink.wait_for(3)}
    assert set(records) == {"embeddings", "chat.completions", "predict"}
    embeddings = records["embeddings"]
    assert (embeddings.model_name, embeddings.deployment_id, embeddings.environment) == ("embedder", "d-emb",
                                                                                         "production")
    assert (embeddings.input_units, embeddings.output_units) == (3, 0)
    assert (records["chat.completions"].input_units, records["chat.completions"].output_units) == (7, 3)
    assert (records["predict"].input_units, records["predict"].output_units) == (1, 1)
    assert records["predict"].request_id != "mine" and predict.headers["x-request-id"] == "mine"
    for record in records.values():
        assert (record.workspace_id, record.key_id, record.status_code) == ("ws-a", "k-admin-a", 200)
        assert 0 < record.latency_ms < 5000 and abs(record.created_at - time.time()) < 60
    time.sleep(0.2)
    assert len(gw.sink.records) == 3


def test_a_refused_request_for_a_model_is_metered_with_no_units(gateway):
    gw = gateway(world(["http://127.0.0.1:9"]))
    with gw.client() as http:
        assert http.post("/models/echo/predict", json={}).status_code == 503
    (record,) = gw.sink.wait_for(1)
    assert (record.status_code, record.input_units, record.output_units) == (503, 0, 0)


def _start_gateway_process(snapshot_file: Path, home: Path, name: str, flush_interval: float):
    port_file = home / f"{name}.port"
    log = open(home / f"{name}.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "slipway.gateway", "--snapshot-file", str(snapshot_file), "--home", str(home),
         "--port", "0", "--port-file", str(port_file), "--usage-flush-interval", str(flush_interval)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 30
    while not port_file.exists():
        assert process.poll() is None, (home / f"{name}.log").read_text()
        assert time.monotonic() < deadline, "gateway process did not bind a port"
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port_file.read_text()}"
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "gateway process never became healthy"
        time.sleep(0.02)


def test_sigkill_after_answers_loses_no_usage_record(replicas, tmp_path):
    (replica,) = replicas(1)
    snapshot_file = tmp_path / "snapshot.json"
    snapshot_file.write_text(world([replica.url]).model_dump_json())
    home = tmp_path / "home"
    home.mkdir()
    # A flush interval far beyond the test: every record is still only in the journal at the kill.
    first, url = _start_gateway_process(snapshot_file, home, "first", flush_interval=600)
    answered = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_A}"}) as http:
        for i in range(25):
            response = http.post("/models/echo/predict", json={"i": i})
            assert response.status_code == 200
            answered.append(response.headers["x-request-id"])
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert list((home / "usage").glob("*.jsonl")), "the journal should hold the unflushed records"

    second, _ = _start_gateway_process(snapshot_file, home, "second", flush_interval=0.05)
    try:
        store = Store.open(None, home)
        deadline = time.monotonic() + 20
        while True:
            with store.engine.connect() as conn:
                ids = [row[0] for row in conn.exec_driver_sql("SELECT request_id FROM usage").all()]
            if len(ids) >= len(answered) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert sorted(ids) == sorted(answered)  # each answered request exactly once, nothing else
        assert not [p for p in (home / "usage").glob("*.jsonl") if p.stat().st_size], "replayed segments remain"
        store.close()
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(10)


class FlakySink:
    """Refuses everything while `down`, and always refuses records of model 'poison'."""

    def __init__(self) -> None:
        self.down = False
        self.stored: dict[str, object] = {}

    def write(self, records) -> None:
        if self.down or any(r.model_name == "poison" for r in records):
            raise RuntimeError("refused")
        self.stored.update({r.request_id: r for r in records})


def _fields(request_id: str, model: str = "m") -> dict:
    return {"request_id": request_id, "workspace_id": "ws", "model_name": model, "route": "predict",
            "created_at": 1.0}


async def test_a_down_sink_keeps_records_and_a_poison_record_is_set_aside(tmp_path):
    from slipway.gateway.config import GatewayConfig
    from slipway.gateway.meter import UsageMeter

    sink = FlakySink()
    meter = UsageMeter(sink, GatewayConfig(usage_journal_dir=tmp_path, usage_flush_interval=60))
    await meter.start()
    try:
        sink.down = True
        meter.record(_fields("a"))
        for _ in range(6):  # past the one-by-one threshold: a sink refusing everything is down, keep all
            assert await meter.flush() is False
        sink.down = False
        meter.record(_fields("b"))
        meter.record(_fields("bad", model="poison"))
        for _ in range(6):
            if await meter.flush():
                break
        assert set(sink.stored) == {"a", "b"}
        (refused,) = (tmp_path / "refused").glob("*.jsonl")
        assert b'"bad"' in refused.read_bytes()
        assert not [p for p in tmp_path.glob("*.jsonl") if p.stat().st_size]
    finally:
        await meter.stop()
