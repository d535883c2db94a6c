"""Forward one request to a replica and its answer back: pick, retry before the first byte, relay.

    await proxy.forward(call, target, upstream_path, body, content_type, send, receive)

  pick      the deployment's policy chooses among ready replicas (tracker: in flight, circuit breakers);
            for a policy that needs block hashes (kv_aware) the prompt is tokenized first, as the
            replicas do (tokenizer_cache.py)
  send      pooled keep-alive connection; the request id travels as x-request-id; the headers must
            come within first_byte_timeout, the whole answer within request_timeout
  retry     a failure before any response byte (refused, reset, closed, no headers in time, or a
            503 while the replica drains) is retried once on a different replica
  health    every attempt tells the replica's circuit breaker how it went (see health.py)
  relay     a response with a Content-Length under max_buffered_response_bytes is read whole (to
            read its usage); anything else (SSE, chunked, large) is forwarded as it arrives, an SSE
            answer in whole events (sse.py)
  broken    after the first byte there is no retry. An answer that breaks off (replica gone,
            connection reset, a timeout) never ends looking whole: an SSE answer ends with an
            OpenAI error event and no `data: [DONE]`; any other body is cut by dropping the
            client's connection without its last chunk
  meter     one usage record per request, journaled before the last bytes go out; an SSE answer of
            the chat and completions routes is metered from its usage chunk, read as the chunks
            pass. A broken answer is billed as answered (its usage chunk if one passed, else 1 in,
            1 out once any byte went out) with status 502
  metric    a request held for a cold start (Call.held) reports the time to its first byte sent
  capture   a call with a trace draft (its target captures) keeps references to its answer's bytes,
            bounded, and hands the draft to TraceCapture with its usage record (capture.py); its
            answer carries x-slipway-trace-id, the usage record's request id
  span      with OpenTelemetry on (Call.span, observe/tracing.py) the upstream request carries the
            gateway span's traceparent; the span gets the replica chosen, each failed attempt and
            retry as events, and the usage record's model, deployment and tokens
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from urllib.parse import quote

import orjson

from slipway.errors import SlipwayError, UpstreamError
from slipway.gateway.capture import TRACE_ID_HEADER, TraceCapture, TraceDraft
from slipway.gateway.config import GatewayConfig
from slipway.gateway.errors import NoReadyReplicaError
from slipway.gateway.health import ReplicaTracker
from slipway.gateway.http import Receive, Send, error_json, send_json
from slipway.gateway.meter import StreamUsage, UsageMeter, units_from_body
from slipway.observe import tracing
from slipway.observe.metrics import GatewayMetrics
from slipway.gateway.sse import SseFramer, error_event
from slipway.gateway.table import DeploymentRoute, Target
from slipway.gateway.tokenizer_cache import TokenizerCache
from slipway.gateway.upstream import (
    UpstreamBroken, UpstreamConnectFailed, UpstreamPool, UpstreamResponse, UpstreamTimeout,
)
from slipway.routing import RouteRequest, RoutingPolicy
from slipway.routing.prompt import prompt_text
from slipway.spec.replica import ADAPTER_HEADER, ADAPTER_PATH_HEADER
from slipway.spec.snapshot import KeyEntry

log = logging.getLogger(__name__)

# Response headers passed from the replica to the client, besides content-type and length.
_PASSED_HEADERS = (b"cache-control", b"retry-after")
_USAGE_KEY = b'"usage"'
# Routes whose SSE answers end with an OpenAI usage chunk (stream_options.include_usage).
_TOKEN_STREAM_ROUTES = frozenset({"chat.completions", "completions"})


@dataclass(slots=True)
class Call:
    """One request through the gateway, from arrival to its usage record."""

    request_id: bytes          # echoed as x-request-id and sent to the replica
    usage_id: str              # the usage record's key: always generated here, never the client's
    started: float             # perf_counter at arrival
    created_at: float          # unix time at arrival
    route: str                 # predict | embeddings | chat.completions | completions
    key: KeyEntry | None = None
    held: bool = False         # waited for a cold start (no ready replica when it arrived)
    trace: TraceDraft | None = None  # set when the target captures
    span: tracing.RequestSpan | None = None  # set when OpenTelemetry tracing is on

    def echo(self) -> list[tuple[bytes, bytes]]:
        if self.trace is not None:
            return [(b"x-request-id", self.request_id), (TRACE_ID_HEADER, self.usage_id.encode())]
        return [(b"x-request-id", self.request_id)]


def routing_request(deployment_id: str, policy: RoutingPolicy, body: bytes) -> RouteRequest:
    """What the policy needs to know of a request; the body is parsed only for cache-aware policies."""
    if not policy.needs_prompt:
        return RouteRequest(deployment_id)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return RouteRequest(deployment_id)
    text = prompt_text(payload) if isinstance(payload, dict) else None
    return RouteRequest(deployment_id, prompt_text=text)


class Proxy:
    def __init__(self, config: GatewayConfig, pool: UpstreamPool, tracker: ReplicaTracker,
                 meter: UsageMeter, metrics: GatewayMetrics, tokenizers: TokenizerCache | None = None,
                 capture: TraceCapture | None = None) -> None:
        self.config = config
        self.capture = capture
        self.pool = pool
        self.tracker = tracker
        self.meter = meter
        self.metrics = metrics
        self.tokenizers = tokenizers

    async def route_request(self, route: DeploymentRoute, body: bytes) -> RouteRequest:
        """`routing_request`, with the prompt's KV block hashes when the policy reads them."""
        policy = route.policy
        request = routing_request(route.entry.deployment_id, policy, body)
        if policy.needs_block_hashes and self.tokenizers is not None:
            max_blocks = getattr(getattr(policy, "config", None), "max_request_blocks", None)
            block_hashes = await self.tokenizers.block_hashes(route, body, max_blocks)
            if block_hashes:
                request = dataclasses.replace(request, block_hashes=block_hashes)
        return request

    async def forward(self, call: Call, target: Target, upstream_path: bytes, body: bytes,
                      content_type: bytes, send: Send, receive: Receive) -> None:
        with self.metrics.in_flight_request(target.model_name, target.environment, target.route.entry.deployment_id):
            await self._forward(call, target, upstream_path, body, content_type, send, receive)

    async def _forward(self, call: Call, target: Target, upstream_path: bytes, body: bytes,
                       content_type: bytes, send: Send, receive: Receive) -> None:
        config = self.config
        route = target.route
        deployment_id = route.entry.deployment_id
        request = await self.route_request(route, body)
        attempts = 2 if config.retry_on_connect_failure else 1
        first_byte_timeout = min(config.first_byte_timeout, config.request_timeout)
        loop = asyncio.get_running_loop()
        tracker = self.tracker
        tried: frozenset[str] = frozenset()
        failure: UpstreamError | None = None
        span = call.span
        trace_headers = span.upstream_headers() if span is not None else b""
        if target.adapter is not None:
            trace_headers += adapter_headers(target.model_name, target.adapter.path)
        for attempt in range(attempts):
            replica = tracker.choose(route, request, tried, time.monotonic())
            if replica is None:
                break
            if attempt > 0:
                self.metrics.retry(target.model_name, target.environment, deployment_id)
            replica_id = replica.replica_id
            if span is not None:
                span.set_attributes({tracing.REPLICA_ID: replica_id, tracing.ATTEMPTS: attempt + 1})
                if attempt > 0:
                    span.event("retry", {tracing.REPLICA_ID: replica_id, "slipway.attempt": attempt + 1})
            host, path = self.pool.request_target(replica.url, upstream_path)
            message = b"".join((
                b"POST ", path, b" HTTP/1.1\r\nhost: ", host, b"\r\ncontent-type: ", content_type,
                b"\r\ncontent-length: %d\r\nx-request-id: " % len(body), call.request_id, b"\r\n", trace_headers,
                b"\r\n", body))
            deadline = loop.time() + config.request_timeout
            tracker.begin(replica_id, deployment_id)
            try:
                response = await self.pool.send(replica.url, message, timeout=first_byte_timeout)
            except (UpstreamConnectFailed, UpstreamTimeout) as exc:
                # Nothing came back: another replica may take it (inference requests are idempotent).
                tracker.end(replica_id, deployment_id)
                tracker.failed(replica_id, time.monotonic(), at_once=isinstance(exc, UpstreamConnectFailed))
                self._upstream_error(call, target, replica_id,
                                     "connect" if isinstance(exc, UpstreamConnectFailed) else "timeout", exc.message)
                tried |= {replica_id}
                failure = exc
                log.warning("replica %s failed before answering: %s", replica_id, exc.message)
                continue
            except UpstreamError as exc:
                tracker.end(replica_id, deployment_id)
                tracker.failed(replica_id, time.monotonic())
                self._upstream_error(call, target, replica_id, "other", exc.message)
                await self.refuse(call, target, exc, send)
                return
            except BaseException:
                tracker.end(replica_id, deployment_id)
                tracker.released(replica_id)
                raise
            if response.status == 503 and attempt + 1 < attempts and _has_other(target, tried | {replica_id}):
                # Draining or not ready after all: nothing was processed, so another replica may take it.
                response.close()
                tracker.end(replica_id, deployment_id)
                tracker.mark_down(replica_id, time.monotonic())
                self._upstream_error(call, target, replica_id, "draining", "the replica answered 503")
                tried |= {replica_id}
                continue
            healthy: bool | None = None
            can_retry = attempt + 1 < attempts and _has_other(target, tried | {replica_id})
            try:
                healthy = await self._relay(call, target, response, deadline, send, receive, can_retry)
            except _BrokenBeforeSending as broken:
                # Headers came, then the replica died before the whole body: nothing reached the
                # client yet, so this is still a failure before the first byte.
                healthy = False
                tried |= {replica_id}
                failure = broken.error
                self._upstream_error(call, target, replica_id, "reset", broken.error.message)
                log.warning("replica %s broke off before its answer was sent: %s", replica_id, broken.error.message)
                continue
            finally:
                response.close()
                tracker.end(replica_id, deployment_id)
                if healthy:
                    tracker.succeeded(replica_id)
                elif healthy is None:
                    tracker.released(replica_id)
                else:
                    tracker.failed(replica_id, time.monotonic())
            return
        if isinstance(failure, UpstreamTimeout):
            await self.refuse(call, target, UpstreamTimeout(
                f"no replica of model {target.model_name!r} answered in time ({failure.message}); retry, or "
                "raise the gateway's first_byte_timeout if the model needs longer before its first byte"), send)
            return
        if failure is not None:
            error = NoReadyReplicaError(f"no replica of model {target.model_name!r} could be reached "
                                        f"({failure.message}); retry shortly")
        else:
            ready = sum(1 for r in route.replicas if r.ready)
            error = NoReadyReplicaError(f"model {target.model_name!r} has no ready replica ({len(route.replicas)} "
                                        f"known, {ready} ready); retry in a few seconds")
        await self.refuse(call, target, error, send)

    async def refuse(self, call: Call, target: Target | None, error: SlipwayError, send: Send) -> None:
        """Answer `error` in the OpenAI shape (with Retry-After when its class asks for one); meter it
        when it concerns a resolved model."""
        body = error_json(error)
        if target is not None:
            if call.trace is not None:
                call.trace.set_body(body)
            self._meter(call, target, error.status_code, None)
        headers = call.echo()
        if getattr(error, "retry_after", False):
            headers.append((b"retry-after", b"%d" % self.config.retry_after_seconds))
        await send_json(send, error.status_code, body, headers)

    async def _relay(self, call: Call, target: Target, response: UpstreamResponse, deadline: float, send: Send,
                     receive: Receive, can_retry: bool = False) -> bool | None:
        """Pass the replica's answer on. Whether the replica did its part: True (answered whole, below
        500), False (a 5xx, or broken off), None (the client left first). With `can_retry`, a whole
        body that breaks off before anything was sent raises _BrokenBeforeSending for another replica."""
        status = response.status
        content_type = b"application/json"
        length: int | None = None
        passed: list[tuple[bytes, bytes]] = []
        for name, value in response.headers:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length" and value.isdigit():
                length = int(value)
            elif name in _PASSED_HEADERS:
                passed.append((name, value))
        headers = [(b"content-type", content_type), *call.echo(), *passed]
        if length is not None and length <= self.config.max_buffered_response_bytes \
                and not content_type.startswith(b"text/event-stream"):
            try:
                body = await response.read_all(self.config.stream_idle_timeout, deadline)
            except UpstreamError as exc:
                if can_retry:
                    raise _BrokenBeforeSending(exc) from exc
                await self.refuse(call, target, exc, send)
                return False
            units = units_from_body(body) if b"json" in content_type else None
            if call.trace is not None:
                call.trace.set_body(body)
            self._meter(call, target, status, units)
            headers.append((b"content-length", b"%d" % len(body)))
            self._first_byte(call, target)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return status < 500
        return await self._stream(call, target, response, status, headers, deadline, send, receive)

    async def _stream(self, call: Call, target: Target, response: UpstreamResponse, status: int,
                      headers: list[tuple[bytes, bytes]], deadline: float, send: Send,
                      receive: Receive) -> bool | None:
        self._first_byte(call, target)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        # A client that goes away must not keep a replica generating for nobody.
        gone = asyncio.ensure_future(receive())

        def client_left(_: asyncio.Future) -> None:
            response.abort("the client closed the connection")

        gone.add_done_callback(client_left)
        is_sse = _content_type(headers).startswith(b"text/event-stream")
        framer = SseFramer() if is_sse else None
        token_stream = StreamUsage() if is_sse and call.route in _TOKEN_STREAM_ROUTES else None
        units: tuple[int, int] | None = None
        trace = call.trace
        if trace is not None:
            trace.stream = is_sse
        broken: UpstreamError | None = None
        sent_any = False
        idle_timeout = self.config.stream_idle_timeout
        try:
            while True:
                try:
                    chunk = await response.read_chunk(idle_timeout, deadline)
                except UpstreamError as exc:
                    if not gone.done():
                        broken = exc
                    break
                if not chunk:
                    if framer is not None:
                        chunk = framer.flush()
                        if chunk:
                            await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    break
                if trace is not None:
                    trace.add_chunk(chunk)
                if token_stream is not None:
                    token_stream.feed(chunk)
                elif _USAGE_KEY in chunk:
                    units = units_from_body(chunk) or units
                if framer is not None:
                    chunk = framer.feed(chunk)
                    if not chunk:
                        continue
                sent_any = True
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            gone.remove_done_callback(client_left)
            if not gone.done():
                gone.cancel()
        if token_stream is not None:
            units = token_stream.units
        if gone.done():
            self._meter(call, target, status, units)
            return None
        if broken is None:
            self._meter(call, target, status, units)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return status < 500
        # Broken midway: bill what was answered, once; then make the break unmistakable.
        log.warning("an answer of model %r (deployment %s) broke off midway: %s", target.model_name,
                    target.route.entry.deployment_id, broken.message)
        self._meter(call, target, UpstreamBroken.status_code, units or ((1, 1) if sent_any else (0, 0)))
        if framer is None:
            # Returning without the last body message makes the server drop the connection, so the
            # client sees an incomplete body (an error), never a short one it takes for whole.
            return False
        framer.discard()
        event = error_event(f"the answer broke off midway ({broken.message}); it is incomplete, retry the "
                            "request")
        if framer.mid_event:
            event = b"\n\n" + event
        await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return False

    def _upstream_error(self, call: Call, target: Target, replica_id: str, kind: str, message: str) -> None:
        """Count a failed attempt on `replica_id` (`kind`: connect, timeout, draining, reset, other)."""
        self.metrics.upstream_error(target.model_name, target.environment, target.route.entry.deployment_id, kind)
        if call.span is not None:
            call.span.event("upstream_error", {tracing.REPLICA_ID: replica_id, tracing.ERROR_TYPE: kind,
                                               "exception.message": message})

    def _first_byte(self, call: Call, target: Target) -> None:
        if call.held:
            self.metrics.cold_start(target.model_name, target.environment, target.route.entry.deployment_id,
                                    time.perf_counter() - call.started)

    def _meter(self, call: Call, target: Target, status: int, units: tuple[int, int] | None) -> None:
        measured = units
        if units is None:
            units = (1, 1) if status < 400 else (0, 0)
        seconds = time.perf_counter() - call.started
        tokens = units if call.route in _TOKEN_STREAM_ROUTES else (0, 0)
        self.metrics.observe_request(target.model_name, target.environment, target.route.entry.deployment_id,
                                     status_code=status, seconds=seconds, prompt_tokens=tokens[0],
                                     completion_tokens=tokens[1])
        key = call.key
        fields = {
            "request_id": call.usage_id,
            "workspace_id": key.workspace_id if key else "",
            "key_id": key.key_id if key else None,
            "model_name": target.model_name,
            "deployment_id": target.route.entry.deployment_id,
            "environment": target.environment,
            "route": call.route,
            "input_units": units[0],
            "output_units": units[1],
            "latency_ms": round(seconds * 1000.0, 3),
            "status_code": status,
            "created_at": call.created_at,
        }
        self.meter.record(fields)
        if call.span is not None:
            call.span.set_attributes({
                tracing.REQUEST_ID: call.usage_id, tracing.WORKSPACE_ID: fields["workspace_id"],
                tracing.MODEL: target.model_name, tracing.ENVIRONMENT: target.environment,
                tracing.DEPLOYMENT_ID: fields["deployment_id"]})
            if measured is not None and call.route in _TOKEN_STREAM_ROUTES:
                call.span.set_attributes({tracing.INPUT_TOKENS: measured[0], tracing.OUTPUT_TOKENS: measured[1]})
        if call.trace is not None and self.capture is not None:
            fields["units"] = measured if call.route != "predict" else None
            self.capture.submit(fields, call.trace)


class _BrokenBeforeSending(Exception):
    """A whole-body answer broke off after its headers, before anything was sent to the client."""

    def __init__(self, error: UpstreamError) -> None:
        super().__init__(error.message)
        self.error = error


def adapter_headers(name: str, path: str) -> bytes:
    """Request headers naming the LoRA adapter a replica applies (`spec.replica.ADAPTER_HEADER`)."""
    return b"%s: %s\r\n%s: %s\r\n" % (ADAPTER_HEADER.encode(), quote(name, safe=":@-_.~").encode(),
                                       ADAPTER_PATH_HEADER.encode(), quote(path, safe="/:@-_.~").encode())


def _content_type(headers: list[tuple[bytes, bytes]]) -> bytes:
    return next((value for name, value in headers if name == b"content-type"), b"")


def _has_other(target: Target, tried: frozenset[str]) -> bool:
    return any(r.ready and r.replica_id not in tried for r in target.route.replicas)
