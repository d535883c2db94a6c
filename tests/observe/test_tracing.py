"""OpenTelemetry export of the request path: a real gateway and a real LLM replica (a tiny random
Llama on the built-in engine) on 127.0.0.1, their spans posted by the official SDK to a real
OTLP/HTTP endpoint served here and decoded with OpenTelemetry's own protobuf messages.

    client (traceparent) ─► gateway span ─► replica span      one trace, parent by parent

With no endpoint set, a subprocess serves a request through a gateway and a replica and shows
that no OpenTelemetry module was ever imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from slipway.gateway import GatewayConfig, StaticSnapshotSource, create_gateway_app
from slipway.observe import tracing
from slipway.server.app import ReplicaApp
from slipway.spec.package import parse_package
from tests.engine.conftest import _save_model
from tests.gateway.conftest import INVOKE_A, CollectingSink, ServerThread, deployment, world
from tests.server.conftest import InThreadReplica

REPO = Path(__file__).resolve().parents[2]
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")
HELLO = [{"role": "user", "content": "hello world"}]
CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"
COLLECTOR_TOKEN = "Bearer collector-token"
DEAD_URL = "http://127.0.0.1:9"  # nothing listens on the discard port: connections are refused


class OtlpReceiver:
    """An OTLP/HTTP trace endpoint on 127.0.0.1: POST /v1/traces, protobuf bodies, spans kept decoded."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        self.authorizations: list[str | None] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.path != "/v1/traces" or self.headers["content-type"] != "application/x-protobuf":
                    self.send_error(404)
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.add(request, self.headers.get("authorization"))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, request: ExportTraceServiceRequest, authorization: str | None) -> None:
        decoded = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    decoded.append({
                        "service": resource.get("service.name"), "name": span.name, "kind": span.kind,
                        "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(), "status": span.status.code,
                        "attributes": {a.key: _value(a.value) for a in span.attributes},
                        "events": [(e.name, {a.key: _value(a.value) for a in e.attributes}) for e in span.events],
                    })
        with self.lock:
            self.spans += decoded
            self.authorizations.append(authorization)

    def trace_of(self, attribute: str, value, timeout: float = 10.0) -> str:
        """The trace id of the first span with `attribute` equal to `value`, once it has arrived."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = [span["trace_id"] for span in self.spans if span["attributes"].get(attribute) == value]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no span with {attribute}={value!r} arrived"
            time.sleep(0.02)

    def trace(self, trace_id: str, count: int, timeout: float = 10.0) -> dict[str, dict]:
        """The spans of `trace_id` by service name, once `count` of them have arrived."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = [span for span in self.spans if span["trace_id"] == trace_id]
            if len(found) >= count:
                assert len(found) == count, found
                return {span["service"]: span for span in found}
            assert time.monotonic() < deadline, f"{len(found)} of {count} spans of trace {trace_id} arrived: {found}"
            time.sleep(0.02)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value):
    return getattr(value, value.WhichOneof("value"))


@pytest.fixture(scope="module")
def receiver():
    served = OtlpReceiver()
    yield served
    served.close()


def export_to(patch: pytest.MonkeyPatch, receiver: OtlpReceiver) -> None:
    """The variables an operator sets (and a quick batch delay, so tests need not wait 5 s)."""
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_EXPORTER",
                 "OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        patch.delenv(name, raising=False)
    patch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    patch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization={COLLECTOR_TOKEN}")
    patch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")


@pytest.fixture(scope="module")
def replica(tmp_path_factory, receiver):
    """A traced kind `llm` replica, in a thread of this process."""
    folder = tmp_path_factory.mktemp("tiny-traced-llm")
    _save_model(folder, "llama", seed=11)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    spec = parse_package(f"name: tiny\nkind: llm\nweights: {folder}\nresources: {{cpu: 1}}\n"
                         "runtime: {max_model_len: 256, max_num_seqs: 4, dtype: float32, block_size: 16}\n")
    with pytest.MonkeyPatch.context() as patch:
        export_to(patch, receiver)
        patch.setenv("SLIPWAY_LLM_KV_CACHE_MEMORY", "8Mi")
        app = ReplicaApp(spec, folder, replica_id="r-tiny")
        with InThreadReplica(app) as served:
            served.wait_ready()
            yield served


@pytest.fixture
def gateway(receiver, monkeypatch, tmp_path):
    """start(snapshot, **config) -> a traced gateway served on 127.0.0.1 (ServerThread)."""
    export_to(monkeypatch, receiver)
    started: list[ServerThread] = []

    def start(snapshot, **config) -> ServerThread:
        config.setdefault("usage_journal_dir", tmp_path / f"usage-{len(started)}")
        app = create_gateway_app(StaticSnapshotSource(snapshot), CollectingSink(), GatewayConfig(**config))
        server = ServerThread(app).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def openai_client(gateway_url: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=INVOKE_A, max_retries=0, default_headers=headers)


def test_the_replica_span_is_the_child_of_the_gateway_span_in_the_clients_trace(replica, gateway, receiver):
    gw = gateway(world([replica.url]))
    answer = openai_client(gw.url, traceparent=CLIENT_TRACEPARENT).chat.completions.create(
        model="echo", messages=HELLO, max_tokens=4)

    spans = receiver.trace(CLIENT_TRACE_ID, 2)
    edge, served = spans[tracing.GATEWAY_SERVICE_NAME], spans[tracing.REPLICA_SERVICE_NAME]
    assert edge["parent_span_id"] == CLIENT_SPAN_ID  # the client's trace is kept
    assert served["parent_span_id"] == edge["span_id"]
    assert edge["kind"] == served["kind"] == SpanProto.SPAN_KIND_SERVER
    assert edge["name"] == served["name"] == "POST /v1/chat/completions"
    assert edge["attributes"] | {
        "http.route": "/v1/chat/completions", "http.response.status_code": 200,
        "slipway.model": "echo", "slipway.environment": "production", "slipway.deployment_id": "d-echo",
        "slipway.workspace_id": "ws-a", "slipway.replica_id": "d-echo-r0", "slipway.attempts": 1,
        "gen_ai.usage.input_tokens": answer.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": answer.usage.completion_tokens,
    } == edge["attributes"]
    assert served["attributes"] | {
        "http.route": "/v1/chat/completions", "http.response.status_code": 200, "slipway.model": "tiny",
        "gen_ai.request.model": "echo", "slipway.replica_id": "r-tiny",
        "gen_ai.usage.input_tokens": answer.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": answer.usage.completion_tokens,
    } == served["attributes"]
    assert edge["status"] == served["status"] == 0  # unset: not an error
    assert receiver.authorizations[-1] == COLLECTOR_TOKEN  # OTEL_EXPORTER_OTLP_HEADERS reach the collector


def test_a_stream_records_its_time_to_first_token_and_its_usage(replica, gateway, receiver):
    gw = gateway(world([replica.url]))
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        response = http.post("/v1/chat/completions", headers={"authorization": f"Bearer {INVOKE_A}"}, json={
            "model": "echo", "messages": HELLO, "max_tokens": 6, "stream": True,
            "stream_options": {"include_usage": True}})
    assert response.status_code == 200
    usage = [json.loads(line[6:])["usage"] for line in response.text.splitlines()
             if line.startswith("data: {") and '"usage":{' in line][-1]
    # No traceparent from this client: the gateway span starts the trace.
    trace_id = receiver.trace_of("slipway.request_id", response.headers["x-request-id"])
    spans = receiver.trace(trace_id, 2)
    edge, served = spans[tracing.GATEWAY_SERVICE_NAME], spans[tracing.REPLICA_SERVICE_NAME]
    assert edge["parent_span_id"] == "" and served["parent_span_id"] == edge["span_id"]
    ttft = served["attributes"]["gen_ai.server.time_to_first_token"]
    assert 0 < ttft < 30
    assert ("first_token", {}) in served["events"]
    for span in (edge, served):
        assert span["attributes"]["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
        assert span["attributes"]["gen_ai.usage.output_tokens"] == usage["completion_tokens"]


def test_a_retry_is_an_event_of_the_gateway_span(replica, gateway, receiver):
    # round_robin takes the second replica first: the dead one, so the request is retried on the live one.
    echo = deployment("d-echo", "echo", [replica.url, DEAD_URL], routing="round_robin")
    gw = gateway(world(echo))
    openai_client(gw.url, traceparent=CLIENT_TRACEPARENT.replace("4bf9", "5bf9")).chat.completions.create(
        model="echo", messages=HELLO, max_tokens=2)

    spans = receiver.trace(CLIENT_TRACE_ID.replace("4bf9", "5bf9"), 2)
    edge, served = spans[tracing.GATEWAY_SERVICE_NAME], spans[tracing.REPLICA_SERVICE_NAME]
    assert [name for name, _ in edge["events"]] == ["upstream_error", "retry"]
    failed, retried = edge["events"][0][1], edge["events"][1][1]
    assert failed["slipway.replica_id"] == "d-echo-r1" and failed["error.type"] == "connect"
    assert retried == {"slipway.replica_id": "d-echo-r0", "slipway.attempt": 2}
    assert edge["attributes"]["slipway.replica_id"] == "d-echo-r0" and edge["attributes"]["slipway.attempts"] == 2
    assert served["parent_span_id"] == edge["span_id"]


def test_the_cold_start_hold_and_a_refusal_are_on_the_gateway_span(replica, gateway, receiver):
    asleep = deployment("d-echo", "echo", [])  # scaled to zero
    gw = gateway(world(asleep), cold_start_timeout=0.3)
    trace_id = CLIENT_TRACE_ID.replace("4bf9", "6bf9")
    with pytest.raises(openai.InternalServerError):
        openai_client(gw.url, traceparent=CLIENT_TRACEPARENT.replace("4bf9", "6bf9")).chat.completions.create(
            model="echo", messages=HELLO, max_tokens=2)

    (edge,) = receiver.trace(trace_id, 1).values()  # no replica was reached
    assert edge["attributes"]["http.response.status_code"] == 503
    assert edge["attributes"]["error.type"] == "503" and edge["status"] == 2  # STATUS_CODE_ERROR
    assert 0.25 < edge["attributes"]["slipway.cold_start.hold_seconds"] < 5
    assert edge["attributes"]["slipway.deployment_id"] == "d-echo"


def test_the_service_name_and_sampler_come_from_the_standard_variables(receiver, monkeypatch):
    export_to(monkeypatch, receiver)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edge-eu-1")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    spans = tracing.tracing_from_env(tracing.GATEWAY_SERVICE_NAME)
    try:
        assert spans is not None and spans.service_name == "edge-eu-1"
        span = spans.server_span("POST /v1/completions", [(b"x-request-id", b"r1")])
        assert not span.span.is_recording()
        # A trace sampled out here is sampled out downstream too: the flags travel without "sampled".
        name, _, value = span.upstream_headers().decode().strip().partition(": ")
        assert name == "traceparent" and int(value.split("-")[3], 16) & 0x01 == 0
        span.end()
    finally:
        if spans is not None:
            spans.shutdown()


@pytest.mark.parametrize("variables, enabled", [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
])
def test_tracing_is_on_only_when_an_endpoint_is_set(variables, enabled):
    assert tracing.tracing_enabled(variables) is enabled


UNTRACED_REQUEST = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import httpx
    from slipway.gateway import GatewayConfig, StaticSnapshotSource, create_gateway_app
    from slipway.server.app import ReplicaApp
    from slipway.server.process import read_package
    from tests.gateway.conftest import INVOKE_A, CollectingSink, ServerThread, world

    package = Path("examples/echo")
    replica_app = ReplicaApp(read_package(package), package, replica_id="r-echo")
    replica = ServerThread(replica_app).start()
    while not replica_app.state.ready:
        time.sleep(0.01)
    gateway = ServerThread(create_gateway_app(StaticSnapshotSource(world([replica.url])), CollectingSink(),
                                              GatewayConfig(usage_journal_dir=Path(sys.argv[1])))).start()
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        response = http.post("/models/echo/predict", json={"hi": 1}, headers={
            "authorization": f"Bearer {INVOKE_A}", "traceparent": "%s"})
    gateway.stop()
    replica.stop()
    print(json.dumps({"status": response.status_code,
                      "otel": sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")}))
""" % CLIENT_TRACEPARENT)


def test_without_an_endpoint_no_opentelemetry_module_is_imported(tmp_path):
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", UNTRACED_REQUEST, str(tmp_path / "usage")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"status": 200, "otel": []}
