"""OpenTelemetry traces of the request path: one server span per request in the gateway and in the replica.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set. Off,
`tracing_from_env()` returns None, no OpenTelemetry module is imported by this one, and callers
skip every tracing step with one `is None` test: the request path pays nothing.

    tracing = tracing_from_env(GATEWAY_SERVICE_NAME)      # None when off
    span = tracing.server_span("POST /v1/chat/completions", asgi_headers, {"http.route": ...})
    send = span.wrap_send(send)                            # records the response status
    upstream = span.upstream_headers()                     # b"traceparent: 00-...\\r\\n" for the replica
    span.set_attributes({...}); span.event("retry", {...})
    span.end()
    tracing.shutdown()                                     # flushes queued spans; blocks up to 2 s

What an operator's collector receives for one request:

    client span (when the client sent a traceparent, the gateway span is its child)
      └─ gateway SERVER "POST /v1/chat/completions"   route, model, environment, deployment, replica,
         │                                            status, tokens, retries (events), cold-start hold
         └─ replica SERVER "POST /v1/chat/completions"  model, tokens, time to first token (streams)

The gateway's upstream call carries W3C `traceparent` (the propagators of `OTEL_PROPAGATORS`,
W3C trace context and baggage by default), so the replica's span is the gateway span's child.

Export is the official SDK's: a BatchSpanProcessor hands finished spans to a thread of its own
that posts them with the OTLP/HTTP protobuf exporter, so a request never waits on the collector;
past its queue (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048) spans are dropped, never requests. The standard
variables apply as the SDK reads them: `OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`,
`..._COMPRESSION` (and their `_TRACES_` forms), `OTEL_SERVICE_NAME` (else `slipway-gateway` or
`slipway-replica`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `..._ARG`,
`OTEL_BSP_*`, `OTEL_SDK_DISABLED`. `OTEL_TRACES_EXPORTER=none` turns tracing off. A stopping
process flushes its queued spans, waiting at most SHUTDOWN_TIMEOUT_SECONDS for the collector.

The SDK and exporter are the optional extra `slipway[otel]`; with an endpoint set but the
packages missing, the process logs how to install them and serves untraced.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Mapping

import orjson

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger(__name__)

GATEWAY_SERVICE_NAME = "slipway-gateway"
REPLICA_SERVICE_NAME = "slipway-replica"

# Either variable turns tracing on; the traces one wins as the export URL (the SDK's rule).
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
_SUPPORTED_PROTOCOL = "http/protobuf"
# How long a stopping process waits for its last spans to reach the collector.
SHUTDOWN_TIMEOUT_SECONDS = 2.0

# Attribute names: OpenTelemetry's semantic conventions where one exists, `slipway.*` otherwise.
HTTP_METHOD = "http.request.method"
HTTP_ROUTE = "http.route"
HTTP_STATUS = "http.response.status_code"
URL_PATH = "url.path"
ERROR_TYPE = "error.type"
REQUEST_MODEL = "gen_ai.request.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
TIME_TO_FIRST_TOKEN = "gen_ai.server.time_to_first_token"   # seconds, as the GenAI metric of that name
REQUEST_ID = "slipway.request_id"
MODEL = "slipway.model"
ENVIRONMENT = "slipway.environment"
DEPLOYMENT_ID = "slipway.deployment_id"
WORKSPACE_ID = "slipway.workspace_id"
REPLICA_ID = "slipway.replica_id"
ROUTE = "slipway.route"
ATTEMPTS = "slipway.attempts"
COLD_START_HOLD = "slipway.cold_start.hold_seconds"

Send = Callable[[dict[str, Any]], Awaitable[None]]
AttributeValue = str | bool | int | float


def tracing_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for trace export (an OTLP endpoint, and not switched off)."""
    environ = os.environ if environ is None else environ
    if not any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES):
        return False
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() != "none"


def tracing_from_env(default_service_name: str) -> "Tracing | None":
    """This process's tracing when the environment asks for it (see the module docstring), else None.

    Only here, and only when enabled, are the OpenTelemetry SDK and exporter imported.
    """
    if not tracing_enabled():
        return None
    try:
        return Tracing(default_service_name)
    except ImportError as exc:
        log.error("OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry's SDK is missing (%s); serving without "
                  "traces. Install it with `pip install 'slipway[otel]'`, or unset the variable", exc)
        return None


class Tracing:
    """One process's tracer over its own provider: BatchSpanProcessor -> OTLP/HTTP protobuf.

    The provider is not installed as OpenTelemetry's global one, so a gateway and replicas can
    share a process (tests) with a service name each.
    """

    def __init__(self, default_service_name: str) -> None:
        from opentelemetry import propagate
        from opentelemetry.context import Context
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

        for name in _PROTOCOL_VARIABLES:
            protocol = os.environ.get(name, "").strip()
            if protocol and protocol != _SUPPORTED_PROTOCOL:
                log.warning("%s=%s is not supported: slipway exports traces over OTLP/HTTP protobuf only; point "
                            "the endpoint at the collector's OTLP/HTTP receiver (port 4318 by default)", name, protocol)
                break
        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the default name.
        named_by_env = bool(OTELResourceDetector().detect().attributes.get(SERVICE_NAME))
        resource = Resource.create({} if named_by_env else {SERVICE_NAME: default_service_name})
        self.provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("slipway")
        self.service_name = str(resource.attributes.get(SERVICE_NAME))
        self.propagator = propagate.get_global_textmap()
        self.propagated_headers = frozenset(field.lower().encode("latin-1") for field in self.propagator.fields)
        self.empty_context = Context
        self.server_kind = SpanKind.SERVER
        self.span_in_context = set_span_in_context
        self.error_status = Status(StatusCode.ERROR)
        self._open = True

    def server_span(self, name: str, headers: Iterable[tuple[bytes, bytes]],
                    attributes: Mapping[str, AttributeValue] | None = None) -> "RequestSpan":
        """A SERVER span starting now, the child of the trace context in `headers` (ASGI's list of
        lower-case (name, value) pairs) when they carry one, else the root of a new trace."""
        wanted = self.propagated_headers
        carrier = {key.decode("latin-1"): value.decode("latin-1") for key, value in headers if key in wanted}
        parent = self.propagator.extract(carrier, context=self.empty_context())
        span = self.tracer.start_span(name, context=parent, kind=self.server_kind, attributes=attributes)
        return RequestSpan(self, span)

    def shutdown(self) -> None:
        """Export what is queued and stop; blocks the caller for at most SHUTDOWN_TIMEOUT_SECONDS."""
        if not self._open:
            return
        self._open = False
        # The SDK would wait out its retries against a collector that is down; a process that
        # is stopping waits this long at most, and spans not out by then are lost.
        flushing = threading.Thread(target=self.provider.shutdown, name="slipway-trace-flush", daemon=True)
        flushing.start()
        flushing.join(SHUTDOWN_TIMEOUT_SECONDS)
        if flushing.is_alive():
            log.warning("the trace collector did not take the last spans within %gs; they are dropped",
                        SHUTDOWN_TIMEOUT_SECONDS)


class RequestSpan:
    """The span of one request, with the few verbs the gateway and the replica need."""

    __slots__ = ("_tracing", "span", "status_code", "started", "first_token_seen")

    def __init__(self, tracing: Tracing, span: "Span") -> None:
        self._tracing = tracing
        self.span = span
        self.status_code: int | None = None
        self.started = time.perf_counter()
        self.first_token_seen = False

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.span.set_attribute(key, value)

    def set_attributes(self, attributes: Mapping[str, AttributeValue | None]) -> None:
        """Set each attribute whose value is not None."""
        self.span.set_attributes({key: value for key, value in attributes.items() if value is not None})

    def event(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        self.span.add_event(name, attributes)

    def upstream_headers(self) -> bytes:
        """HTTP/1.1 header lines (each ending in CRLF) that make the callee's span this span's child."""
        carrier: dict[str, str] = {}
        self._tracing.propagator.inject(carrier, context=self._tracing.span_in_context(self.span))
        return b"".join(b"%s: %s\r\n" % (key.encode("latin-1"), value.encode("latin-1"))
                        for key, value in carrier.items())

    def wrap_send(self, send: Send) -> Send:
        """`send`, noting the status of the response it starts (recorded by `end`)."""

        async def traced_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status_code = message["status"]
            await send(message)

        return traced_send

    def record_usage(self, usage: Any) -> None:
        """Token counts of an OpenAI `usage` object or dict (prompt_tokens, completion_tokens)."""
        if usage is None:
            return
        get = usage.get if isinstance(usage, dict) else lambda name: getattr(usage, name, None)
        prompt_tokens, completion_tokens = get("prompt_tokens"), get("completion_tokens")
        if isinstance(prompt_tokens, int):
            self.span.set_attribute(INPUT_TOKENS, prompt_tokens)
        if isinstance(completion_tokens, int):
            self.span.set_attribute(OUTPUT_TOKENS, completion_tokens)

    def observe_answer(self, result: Any) -> Any:
        """A runtime's result, watched: a whole answer's usage is recorded now; a stream comes back
        wrapped, recording the time to its first token and its usage chunk as they pass."""
        if hasattr(result, "__aiter__") and not isinstance(result, (str, bytes, dict, list)):
            return _ObservedStream(self, result)
        if isinstance(result, dict):
            self.record_usage(result.get("usage"))
        else:
            self.record_usage(getattr(result, "usage", None))
        return result

    def observe_chunk(self, chunk: Any) -> None:
        """Note one chunk of a streamed answer: the first one carrying output marks the time to
        first token (from the span's start); a usage chunk gives the token counts."""
        payload = _chunk_payload(chunk)
        if not self.first_token_seen and _carries_output(payload):
            self.first_token_seen = True
            self.span.set_attribute(TIME_TO_FIRST_TOKEN, time.perf_counter() - self.started)
            self.span.add_event("first_token")
        if isinstance(payload, dict) and payload.get("usage"):
            self.record_usage(payload["usage"])

    def end(self) -> None:
        """Record the response status (5xx marks the span an error, as for HTTP servers) and end it."""
        status = self.status_code
        if status is not None:
            self.span.set_attribute(HTTP_STATUS, status)
            if status >= 500:
                self.span.set_attribute(ERROR_TYPE, str(status))
                self.span.set_status(self._tracing.error_status)
        self.span.end()


class _ObservedStream:
    """A runtime's stream passed through as it is, each chunk shown to the span on its way."""

    __slots__ = ("_span", "_iterator")

    def __init__(self, span: RequestSpan, stream: Any) -> None:
        self._span = span
        self._iterator = stream.__aiter__()

    def __aiter__(self) -> "_ObservedStream":
        return self

    async def __anext__(self) -> Any:
        chunk = await self._iterator.__anext__()
        self._span.observe_chunk(chunk)
        return chunk

    async def aclose(self) -> None:
        # Closing this must close the runtime's stream, started or not: that aborts its engine work.
        aclose = getattr(self._iterator, "aclose", None)
        if aclose is not None:
            await aclose()


def _chunk_payload(chunk: Any) -> Any:
    """A stream chunk as JSON: dicts as they are, `data: {...}` SSE events (relayed engines) parsed."""
    if isinstance(chunk, (bytes, str)):
        raw = chunk.encode() if isinstance(chunk, str) else chunk
        if raw.startswith(b"data: {"):
            try:
                return orjson.loads(raw[6:])
            except orjson.JSONDecodeError:
                return None
        return chunk
    return chunk


def _carries_output(payload: Any) -> bool:
    """Whether a chunk carries generated output: an OpenAI chunk with text in a choice (not the
    opening role chunk, nor the usage chunk), or any chunk of a stream in another shape."""
    if not isinstance(payload, dict) or "choices" not in payload:
        return payload is not None
    for choice in payload.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if choice.get("text") or (isinstance(delta, dict) and (delta.get("content") or delta.get("tool_calls")
                                                               or delta.get("reasoning_content"))):
            return True
    return False
