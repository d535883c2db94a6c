"""The gateway's ASGI app: authenticate, resolve the model, and hand the request to the proxy.

    app = create_gateway_app(source, usage_sink, GatewayConfig(...), traces=trace_sink)
    await app.startup() ... await app.shutdown()      # or let the ASGI server's lifespan do it

Routes
    GET  /v1/models                                    the models this key can call
    POST /v1/embeddings, /v1/chat/completions, /v1/completions     `model`: name or name@env
    POST /models/{name}/predict                        production, else development
    POST /models/{name}/environments/{env}/predict
    POST /deployments/{id}/predict
    GET  /health                                       this gateway, no key needed
    GET  /internal/load                                in flight and waiting per deployment (admin key)

Every answer carries x-request-id; every error is in the OpenAI shape. A model or deployment of
another workspace gets the same 404 as one that does not exist.

A request for a deployment with no ready replica is held (hold.py) until one is ready:
`on_demand(deployment_id)`, given at construction, is called when it starts waiting (`slipway up`
wires it to the control plane's `wake()`), and `load()` counts it as `queued`. Cold-start times
are kept in `metrics_registry` (slipway_gateway_cold_start_seconds) and `cold_starts()`.

Requests to a capturing deployment or environment (and only those) are stored as traces in
`traces`, a TraceSink, when one is given (capture.py); their answers carry x-slipway-trace-id.

With OTEL_EXPORTER_OTLP_ENDPOINT set, every request but /health and /internal/load gets an
OpenTelemetry server span (observe/tracing.py), the child of the client's traceparent if it sent
one; the replica's span is its child. Unset, nothing of OpenTelemetry is loaded.

For kv_aware deployments only, a background task reads each ready replica's /stats every second
(the KV blocks it holds, replica_stats.py) and fetches the deployment's tokenizer once
(tokenizer_cache.py), over a small connection pool of their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any, Callable

import orjson

from slipway.errors import AuthError, BackendError, NotFoundError, PermissionDeniedError, SlipwayError, SpecError
from slipway.gateway.base import SnapshotSource, TraceSink, UsageSink
from slipway.gateway.capture import TraceCapture, TraceDraft
from slipway.gateway.config import GatewayConfig
from slipway.gateway.errors import MethodNotAllowedError
from slipway.gateway.health import ReplicaTracker
from slipway.gateway.hold import ColdStartHold
from slipway.gateway.http import (
    JSON_TYPE, Receive, RequestHeaders, Scope, Send, error_json, new_request_id, parse_json, read_body, send_json,
)
from slipway.gateway.meter import UsageMeter
from slipway.observe import tracing
from slipway.observe.metrics import ColdStart, GatewayMetrics
from slipway.gateway.proxy import Call, Proxy
from slipway.gateway.replica_stats import ReplicaStatsPoller
from slipway.gateway.table import RouteTable, Target
from slipway.gateway.tokenizer_cache import TokenizerCache
from slipway.gateway.upstream import PoolLimits, UpstreamPool
from slipway.spec.snapshot import SCOPE_ADMIN, SCOPE_INVOKE, KeyEntry

log = logging.getLogger(__name__)

# OpenAI routes: path -> (usage route name, path on the replica).
_OPENAI_ROUTES = {
    "/v1/embeddings": ("embeddings", b"/v1/embeddings"),
    "/v1/chat/completions": ("chat.completions", b"/v1/chat/completions"),
    "/v1/completions": ("completions", b"/v1/completions"),
}
_ROUTES_HINT = ("the gateway serves GET /v1/models, POST /v1/embeddings, /v1/chat/completions, /v1/completions, "
                "/models/{name}/predict, /models/{name}/environments/{env}/predict and /deployments/{id}/predict")
_SNAPSHOT_RETRY_DELAY = 1.0
# Polled by probes and the control plane every tick: spans of these would only bury the requests.
_UNTRACED_PATHS = frozenset({"/health", "/internal/load"})


class GatewayApp:
    def __init__(self, source: SnapshotSource, usage: UsageSink, config: GatewayConfig,
                 on_demand: Callable[[str], None] | None = None, traces: TraceSink | None = None) -> None:
        self.source = source
        self.config = config
        self.table = RouteTable.build(source.current())
        # kv_aware deployments: their replicas' tokenizer and cached blocks, read in the background
        # over a pool of their own, so those reads never take a connection from the traffic.
        self.replica_reads = UpstreamPool(PoolLimits(connect_timeout=config.connect_timeout, max_connections=2,
                                                     max_idle_connections=1))
        self.tokenizers = TokenizerCache(self.replica_reads, config)
        self.replica_stats = ReplicaStatsPoller(self.replica_reads, config, self.tokenizers)
        self.tracker = ReplicaTracker(config.unhealthy_cooldown, config.breaker_failures,
                                      self.replica_stats.cached_blocks)
        self.hold = ColdStartHold(config, on_demand)
        self.metrics = GatewayMetrics()
        self.metrics_registry = self.metrics.registry
        self.meter = UsageMeter(usage, config)
        self.capture = TraceCapture(traces, config) if traces is not None else None
        self.pool = UpstreamPool(PoolLimits(
            connect_timeout=config.connect_timeout, pool_timeout=config.pool_timeout,
            max_connections=config.max_connections_per_replica,
            max_idle_connections=config.max_idle_connections_per_replica))
        self.proxy = Proxy(config, self.pool, self.tracker, self.meter, self.metrics, self.tokenizers, self.capture)
        self._follow_task: asyncio.Task[None] | None = None
        self.tracing: tracing.Tracing | None = None
        self.started = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def startup(self) -> None:
        """Open the upstream pool, start following snapshots and flushing usage (replaying leftovers)."""
        if self.started:
            return
        await self.meter.start()
        if self.capture is not None:
            await self.capture.start()
        self.tracing = tracing.tracing_from_env(tracing.GATEWAY_SERVICE_NAME)
        self.hold.stopping = False
        self._install(self.source.current())
        self._follow_task = asyncio.get_running_loop().create_task(self._follow(), name="slipway-snapshot-follow")
        self.replica_stats.start(lambda: self.table.deployments.values())
        self.started = True

    async def shutdown(self) -> None:
        """Stop following snapshots, write the last usage records, close upstream connections."""
        if not self.started:
            return
        self.started = False
        self.hold.stop()
        if self._follow_task is not None:
            self._follow_task.cancel()
            try:
                await self._follow_task
            except asyncio.CancelledError:
                pass
            self._follow_task = None
        await self.replica_stats.stop()
        self.tokenizers.close()
        await self.meter.stop()
        if self.capture is not None:
            await self.capture.stop()
        self.pool.close()
        self.replica_reads.close()
        if self.tracing is not None:
            spans, self.tracing = self.tracing, None
            await asyncio.to_thread(spans.shutdown)  # the last spans go out before the process ends

    async def _follow(self) -> None:
        while True:
            try:
                snapshot = await self.source.wait_newer(self.table.version, self.config.snapshot_poll_timeout)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a source failing must not stop routing with the last snapshot
                log.exception("reading the routing snapshot failed; keeping version %d", self.table.version)
                await asyncio.sleep(_SNAPSHOT_RETRY_DELAY)
                continue
            if snapshot.version != self.table.version:
                self._install(snapshot)

    def _install(self, snapshot) -> None:
        self.table = RouteTable.build(snapshot, previous=self.table)
        self.tracker.on_snapshot(snapshot)
        self.pool.retain(self.table.replica_urls())
        self.replica_reads.retain(self.table.replica_urls())
        self.tokenizers.retain(self.table.deployments.keys())
        self.hold.table_changed()

    # -- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self.tracing is None or scope["path"] in _UNTRACED_PATHS:
                await self._http(scope, receive, send)
            else:
                await self._traced_http(self.tracing, scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("gateway start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _traced_http(self, spans: tracing.Tracing, scope: Scope, receive: Receive, send: Send) -> None:
        """`_http` inside a server span, the child of the client's trace context when it sent one."""
        method, path = scope["method"], scope["path"]
        route = _route_template(path)
        span = spans.server_span(f"{method} {route}" if route else method, scope["headers"], {
            tracing.HTTP_METHOD: method, tracing.URL_PATH: path, **({tracing.HTTP_ROUTE: route} if route else {})})
        try:
            await self._http(scope, receive, span.wrap_send(send), span)
        finally:
            span.end()

    async def _http(self, scope: Scope, receive: Receive, send: Send, span: tracing.RequestSpan | None = None) -> None:
        started = time.perf_counter()
        headers = RequestHeaders(scope["headers"])
        usage_id = new_request_id()
        call = Call(request_id=headers.client_request_id() or usage_id, usage_id=usage_id.decode(),
                    started=started, created_at=time.time(), route="predict", span=span)
        path: str = scope["path"]
        method: str = scope["method"]
        target: Target | None = None
        try:
            if not self.started and path != "/health":
                raise BackendError("the gateway is starting or stopping; retry shortly", code="gateway_not_running")
            openai = _OPENAI_ROUTES.get(path)
            if openai is not None:
                _require_method(method, "POST", path)
                call.route = openai[0]
                call.key = self._invoker(headers)
                body = await read_body(receive, headers, self.config.max_body_bytes)
                model = _model_field(parse_json(body))
                key = call.key

                def resolve() -> Target:
                    return self._allowed(key, self.table.resolve_model(key.workspace_id, model))

                target = resolve()
                if not target.route.has_ready:
                    target = await self._hold(call, target, resolve, receive)
                    if target is None:
                        return  # the client left while its request was held
                self._trace(call, target, body, headers)
                await self.proxy.forward(call, target, openai[1], body, JSON_TYPE, send, receive)
            elif path.startswith(("/models/", "/deployments/")):
                _require_method(method, "POST", path)
                call.key = self._invoker(headers)
                body = await read_body(receive, headers, self.config.max_body_bytes)
                key = call.key

                def resolve() -> Target:
                    return self._allowed(key, self._resolve_predict(key, path))

                target = resolve()
                parse_json(body)  # replicas take JSON; refuse anything else here, before a replica sees it
                if not target.route.has_ready:
                    target = await self._hold(call, target, resolve, receive)
                    if target is None:
                        return  # the client left while its request was held
                self._trace(call, target, body, headers)
                await self.proxy.forward(call, target, b"/predict", body, headers.content_type or JSON_TYPE,
                                         send, receive)
            elif path == "/v1/models":
                _require_method(method, "GET", path)
                key = self._invoker(headers)
                ids = self.table.model_ids(key.workspace_id, key.models)
                data = [{"id": i, "object": "model", "created": 0, "owned_by": "slipway"} for i in ids]
                await send_json(send, 200, orjson.dumps({"object": "list", "data": data}), call.echo())
            elif path == "/health":
                body = orjson.dumps({"status": "ok", "snapshot_version": self.table.version})
                await send_json(send, 200, body, call.echo())
            elif path == "/internal/load":
                _require_method(method, "GET", path)
                key = self._authenticate(headers)
                if SCOPE_ADMIN not in key.scopes:
                    raise PermissionDeniedError("GET /internal/load needs a key with the admin scope")
                await send_json(send, 200, orjson.dumps(self.load(key.workspace_id)), call.echo())
            else:
                raise NotFoundError(f"no route {method} {path}; {_ROUTES_HINT}", code="unknown_route")
        except SlipwayError as exc:
            await self.proxy.refuse(call, target if self.started else None, exc, send)
        except Exception as exc:  # noqa: BLE001 - a bug here must still answer in the OpenAI shape
            log.exception("gateway failed on %s %s", method, path)
            error = SlipwayError(f"the gateway failed ({type(exc).__name__}); retry, and report it if it persists",
                                 code="gateway_error")
            try:
                await send_json(send, 500, error_json(error), call.echo())
            except RuntimeError:  # the response had started: the client sees it cut short
                pass

    async def _hold(self, call: Call, target: Target, resolve: Callable[[], Target],
                    receive: Receive) -> Target | None:
        """`hold.until_ready`, the time held noted on the request's span when it has one."""
        if call.span is None:
            return await self.hold.until_ready(call, target, resolve, receive)
        held_from = time.perf_counter()
        try:
            return await self.hold.until_ready(call, target, resolve, receive)
        finally:
            call.span.set_attribute(tracing.COLD_START_HOLD, time.perf_counter() - held_from)

    def _trace(self, call: Call, target: Target, body: bytes, headers: RequestHeaders) -> None:
        if target.capture and self.capture is not None:
            call.trace = TraceDraft.start(body, headers.tags, self.config.capture_max_bytes)

    # -- auth and resolution ----------------------------------------------------------------------

    def _authenticate(self, headers: RequestHeaders) -> KeyEntry:
        secret = headers.secret()
        if secret is None:
            raise AuthError("no API key; send 'Authorization: Bearer sk-slw-…' or 'Api-Key: sk-slw-…' "
                            "(create one with `slipway keys create`)", code="missing_api_key")
        key = self.table.keys_by_hash.get(hashlib.sha256(secret).hexdigest())
        if key is None:
            shown = secret[:12].decode(errors="replace")
            raise AuthError(f"API key {shown}… is not valid: unknown or revoked; create a new one with "
                            "`slipway keys create`")
        return key

    def _invoker(self, headers: RequestHeaders) -> KeyEntry:
        key = self._authenticate(headers)
        scopes = key.scopes
        if SCOPE_INVOKE not in scopes and SCOPE_ADMIN not in scopes:
            raise PermissionDeniedError(f"this key has scopes [{', '.join(scopes)}] and cannot call models; "
                                        "use a key with the invoke or admin scope")
        return key

    @staticmethod
    def _allowed(key: KeyEntry, target: Target) -> Target:
        if key.models is not None and SCOPE_ADMIN not in key.scopes and target.model_name not in key.models:
            allowed = ", ".join(key.models) or "no models"
            raise PermissionDeniedError(f"this key may call only {allowed}, not {target.model_name!r}; "
                                        "use a key allowed to call it")
        return target

    def _resolve_predict(self, key: KeyEntry, path: str) -> Target:
        parts = path.split("/")
        # /models/{name}/predict | /models/{name}/environments/{env}/predict | /deployments/{id}/predict
        if len(parts) == 4 and parts[3] == "predict" and parts[2]:
            if parts[1] == "models":
                return self.table.resolve_model(key.workspace_id, parts[2])
            return self.table.resolve_deployment(key.workspace_id, parts[2])
        if len(parts) == 6 and parts[1] == "models" and parts[3] == "environments" and parts[5] == "predict" \
                and parts[2] and parts[4]:
            return self.table.resolve_model(key.workspace_id, parts[2], parts[4])
        raise NotFoundError(f"no route POST {path}; {_ROUTES_HINT}", code="unknown_route")

    # -- load report ------------------------------------------------------------------------------

    def load(self, workspace_id: str | None = None) -> dict[str, Any]:
        """In flight and waiting per deployment: all of them, or those of `workspace_id`.

        The operator workspace (`operator_workspace_id`) sees every deployment.
        """
        see_all = workspace_id is None or workspace_id == self.config.operator_workspace_id
        in_flight = self.tracker.in_flight_by_deployment
        queued = self.hold.queued  # requests held for a cold start
        deployments = {
            deployment_id: {"in_flight": in_flight.get(deployment_id, 0), "queued": queued.get(deployment_id, 0)}
            for deployment_id, route in self.table.deployments.items()
            if see_all or route.workspace_id == workspace_id
        }
        return {"snapshot_version": self.table.version, "at": time.time(), "deployments": deployments}

    def cold_starts(self, deployment_id: str | None = None) -> list[ColdStart]:
        """Recent cold starts (requests held for a replica: arrival to first byte sent), oldest first."""
        return self.metrics.recent_cold_starts(deployment_id)


def _require_method(method: str, expected: str, path: str) -> None:
    if method != expected:
        raise MethodNotAllowedError(f"{path} takes {expected}, not {method}")


def _route_template(path: str) -> str | None:
    """The route `path` matches, with its parameters named (a span's `http.route`); None when none does."""
    if path in _OPENAI_ROUTES or path == "/v1/models":
        return path
    parts = path.split("/")
    if len(parts) == 4 and parts[3] == "predict" and parts[1] in ("models", "deployments"):
        return "/models/{name}/predict" if parts[1] == "models" else "/deployments/{id}/predict"
    if len(parts) == 6 and parts[1] == "models" and parts[3] == "environments" and parts[5] == "predict":
        return "/models/{name}/environments/{env}/predict"
    return None


def _model_field(payload: Any) -> str:
    model = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(model, str) or not model:
        raise SpecError("the body needs a 'model' field naming the model, e.g. \"my-model\" or "
                        "\"my-model@development\"; list them with GET /v1/models", code="missing_model")
    return model


def create_gateway_app(source: SnapshotSource, usage: UsageSink, config: GatewayConfig | None = None, *,
                       on_demand: Callable[[str], None] | None = None, traces: TraceSink | None = None) -> GatewayApp:
    """The gateway as an ASGI app; start it with `await app.startup()` or through ASGI lifespan.

    `on_demand(deployment_id)` is called, on the event loop, whenever a request starts waiting for
    a deployment with no ready replica; it must not block (e.g. `ControlPlane.wake`). `traces`
    receives the traces of capturing deployments and environments; without it nothing is captured.
    """
    return GatewayApp(source, usage, config or GatewayConfig(), on_demand, traces)
