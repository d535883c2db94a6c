"""The replica's ASGI app: one runtime behind health, work, metrics and drain routes.

    GET  /health/live            200 as soon as the process answers
    GET  /health/ready           200 when loaded and not draining, else 503
    POST /predict                the runtime's predict: JSON in, JSON or an SSE stream out
    POST /v1/embeddings          OpenAI embeddings
    POST /v1/chat/completions    OpenAI chat (kind llm; 404 in OpenAI shape otherwise)
    POST /v1/completions         OpenAI completions (kind llm; 404 otherwise)
    GET  /metrics                Prometheus text
    GET  /stats                  JSON: kind, ready, draining, in_flight, requests_total + runtime stats
    GET  /tokenizer              kind llm: the tokenizer's files and the KV block size (for kv_aware gateways)
    POST /drain                  stop taking new work; in-flight work finishes
    GET  /v1/models              OpenAI list: the base model, and its LoRA adapters (`parent`: the base)
    GET  /v1/lora_adapters       {"data": [{"name", "path"}]}: the adapters registered now
    POST /v1/load_lora_adapter   {"lora_name", "lora_path"} (vLLM's routes; runtimes that load adapters)
    POST /v1/unload_lora_adapter {"lora_name"}

A work request carrying the gateway's adapter headers (spec.replica.ADAPTER_HEADER and
ADAPTER_PATH_HEADER, percent-encoded) first has the runtime register that adapter
(`ensure_lora_adapter`), then runs with its body's `model` set to the adapter's name (the client
may have written `name@environment`).

Raw ASGI with a dict lookup per request keeps the hot path short. Work routes refuse with 503
and `Retry-After: 1` while loading or draining; every error is in the OpenAI error shape. A
model's exception becomes a 500 carrying its message (the traceback goes to the log), never a
crash of the server.

A client that disconnects before its answer is complete stops the work at once: the handler (or
a stream's wait for its first chunk) is cancelled, which for an LLM aborts the engine requests
and frees their KV blocks; later chunks of a stream stop at the next one. Such a request is
counted with status 499 (client closed request), as nginx does.

With OTEL_EXPORTER_OTLP_ENDPOINT set, each work request gets an OpenTelemetry server span, the
child of the caller's traceparent (the gateway's span): model, tokens, time to first token
(observe/tracing.py). Unset, nothing of OpenTelemetry is loaded.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import traceback
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import unquote

from pydantic import ValidationError

from slipway.errors import SlipwayError
from slipway.observe import request_id_var, tracing
from slipway.runtimes import Runtime, create_runtime, is_stream
from slipway.runtimes.base import BadRequestError, UnsupportedRouteError, bad_request_from_validation
from slipway.server.http import (
    Receive, Send, dumps, error_payload, parse_json, read_body, send_bytes, send_json, send_stream,
)
from slipway.server.metrics import ReplicaMetrics
from slipway.server.state import ServingState
from slipway.spec.openai import EmbeddingsRequest, error_body
from slipway.spec.package import PackageSpec
from slipway.spec.replica import ADAPTER_HEADER, ADAPTER_PATH_HEADER

log = logging.getLogger(__name__)

# Bodies larger than this are refused with 413 before they are parsed.
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
# Requests in flight at once; past it new work gets 503 and Retry-After.
DEFAULT_MAX_IN_FLIGHT = 1024
RETRY_AFTER = [(b"retry-after", b"1")]
# The status recorded for a request whose client left before the answer (nothing is sent).
CLIENT_CLOSED_REQUEST = 499

WorkHandler = Callable[[Any], Awaitable[Any]]

# What a Hugging Face tokenizer is read from: a gateway that routes by KV blocks (kv_aware) builds
# the same tokenizer from these and tokenizes prompts exactly as this replica does.
TOKENIZER_TEXT_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                        "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt", "config.json")
TOKENIZER_BINARY_FILES = ("tokenizer.model",)
# A tokenizer larger than this is not served (the largest common ones are ~10 MB).
MAX_TOKENIZER_BYTES = 64 * 1024 * 1024


class ReplicaApp:
    """ASGI app serving one package; `state` says where it stands, `runtime` is set once loaded."""

    def __init__(self, spec: PackageSpec, package_dir: Path, *, replica_id: str = "local",
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 on_load_failed: Callable[[BaseException], None] | None = None) -> None:
        self.spec = spec
        self.package_dir = Path(package_dir)
        self.replica_id = replica_id
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.on_load_failed = on_load_failed
        self.state = ServingState()
        self.metrics = ReplicaMetrics()
        if spec.kind == "llm":
            self.metrics.watch_llm_engine(lambda: self.runtime, model=spec.name)
        self.runtime: Runtime | None = None
        self.tracing = tracing.tracing_from_env(tracing.REPLICA_SERVICE_NAME)
        self._load_task: asyncio.Task[None] | None = None
        self._tokenizer_body: bytes | None = None  # built once: the loaded runtime never changes
        self._created = int(time.time())  # the `created` of GET /v1/models
        self._work: dict[str, tuple[str, WorkHandler]] = {
            "/predict": ("predict", self._predict),
            "/v1/embeddings": ("embeddings", self._embeddings),
            "/v1/chat/completions": ("chat.completions", self._chat_completions),
            "/v1/completions": ("completions", self._completions),
            "/v1/load_lora_adapter": ("load_lora_adapter", self._load_lora_adapter),
            "/v1/unload_lora_adapter": ("unload_lora_adapter", self._unload_lora_adapter),
        }

    # -- lifecycle -------------------------------------------------------------------------

    def start_loading(self) -> asyncio.Task[None]:
        """Build and load the runtime in the background; the routes answer meanwhile."""
        if self._load_task is None:
            self._load_task = asyncio.get_running_loop().create_task(self._load(), name="load-runtime")
        return self._load_task

    async def _load(self) -> None:
        started = time.monotonic()
        try:
            runtime = create_runtime(self.spec, self.package_dir)
            await runtime.load()
        except BaseException as exc:  # noqa: BLE001 - any failure to load is the package's failure
            if isinstance(exc, asyncio.CancelledError):
                raise
            self.state.load_error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            log.error("load failed: %s", self.state.load_error)
            if self.on_load_failed is not None:
                self.on_load_failed(exc)
            return
        self.runtime = runtime
        self.state.mark_loaded()
        self.metrics.ready.set(0 if self.state.draining else 1)
        log.info("model loaded", extra={"model": self.spec.name, "kind": self.spec.kind,
                                        "load_seconds": round(time.monotonic() - started, 3)})

    def drain(self) -> None:
        """Refuse new work from now on; in-flight work finishes."""
        if not self.state.draining:
            log.info("draining", extra={"in_flight": self.state.in_flight})
        self.state.draining = True
        self.metrics.ready.set(0)

    async def close(self) -> None:
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        if self.runtime is not None:
            await self.runtime.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # the last spans go out before the process ends

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            work = self._work.get(path)
            if work is not None:
                if method != "POST":
                    await send_json(send, 405, error_body(f"{path} takes POST, not {method}", code="method_not_allowed"))
                    return
                if self.tracing is None:
                    await self._serve_work(work[0], work[1], scope, receive, send)
                else:
                    await self._serve_traced_work(self.tracing, work[0], work[1], scope, receive, send)
            else:
                await self._serve_control(path, method, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start_loading()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _serve_control(self, path: str, method: str, receive: Receive, send: Send) -> None:
        if path == "/health/live" and method == "GET":
            await send_json(send, 200, b'{"live":true}')
        elif path == "/health/ready" and method == "GET":
            ready = self.state.ready
            await send_json(send, 200 if ready else 503, {"ready": ready, "state": self.state.phase})
        elif path == "/metrics" and method == "GET":
            self.metrics.in_flight.set(self.state.in_flight)
            await send_bytes(send, 200, self.metrics.render(), self.metrics.content_type)
        elif path == "/stats" and method == "GET":
            await send_json(send, 200, self.stats())
        elif path == "/tokenizer" and method == "GET":
            await self._serve_tokenizer(send)
        elif path == "/v1/models" and method == "GET":
            await send_json(send, 200, self._models())
        elif path == "/v1/lora_adapters" and method == "GET":
            await send_json(send, 200, {"object": "list", "data": self._adapters()})
        elif path == "/drain" and method == "POST":
            await read_body(receive, self.max_body_bytes)
            self.drain()
            await send_json(send, 200, {"draining": True, "in_flight": self.state.in_flight})
        else:
            await send_json(send, 404, error_body(
                f"no route {method} {path} on this replica; it serves /predict, /v1/embeddings, "
                "/v1/chat/completions, /v1/completions, /v1/models, /v1/lora_adapters, /v1/load_lora_adapter, "
                "/v1/unload_lora_adapter, /health/live, /health/ready, /metrics, /stats, /tokenizer, /drain",
                code="not_found"))

    def stats(self) -> dict[str, Any]:
        runtime_stats = self.runtime.stats() if self.runtime is not None else {}
        return {
            **runtime_stats,
            "replica_id": self.replica_id,
            "model": self.spec.name,
            "kind": self.spec.kind,
            "state": self.state.phase,
            "ready": self.state.ready,
            "draining": self.state.draining,
            "in_flight": self.state.in_flight,
            "requests_total": self.state.requests_total,
            "load_error": self.state.load_error,
        }

    async def _serve_tokenizer(self, send: Send) -> None:
        """`GET /tokenizer`: {"model", "kv_block_size", "files": {name: text}, "binary_files": {name: base64}}."""
        if self.spec.kind != "llm":
            await send_json(send, 404, error_body(
                f"this replica runs a kind '{self.spec.kind}' model, which has no tokenizer to serve; only kind "
                "'llm' replicas serve GET /tokenizer", code="not_found"))
            return
        if self.runtime is None:
            await send_json(send, 503, error_body("this replica is still loading its model; retry shortly",
                                                  type="server_error", code="loading"), RETRY_AFTER)
            return
        if self._tokenizer_body is None:
            model_dir = getattr(self.runtime, "model_dir", None)
            if model_dir is None:
                await send_json(send, 404, error_body(
                    "this replica's engine does not expose its tokenizer files; kv_aware gateways route its "
                    "requests by load only", code="not_found"))
                return
            block_size = self.runtime.engine_stats().get("kv_block_size") or self.spec.runtime.block_size
            try:
                self._tokenizer_body = await asyncio.to_thread(_tokenizer_body, Path(model_dir), self.spec.name,
                                                               int(block_size))
            except (OSError, ValueError) as exc:
                await send_json(send, 500, error_body(f"the tokenizer files could not be read: {exc}",
                                                      type="server_error", code="tokenizer_unreadable"))
                return
        await send_json(send, 200, self._tokenizer_body)

    # -- work routes -----------------------------------------------------------------------

    def _refusal(self) -> tuple[str, str] | None:
        """(code, message) when new work must be refused with 503 now."""
        if self.state.draining:
            return "draining", "this replica is draining and takes no new requests; retry, another replica will answer"
        if self.state.load_error is not None:
            return "load_failed", f"this replica failed to load its model: {self.state.load_error}"
        if not self.state.loaded:
            return "loading", "this replica is still loading its model; retry shortly"
        if self.state.in_flight >= self.max_in_flight:
            return "overloaded", f"this replica has {self.state.in_flight} requests in flight (its limit); retry shortly"
        return None

    async def _serve_work(self, route: str, handler: WorkHandler, scope: dict[str, Any],
                          receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = _header(scope, b"x-request-id")
        token = request_id_var.set(request_id)
        echo = [(b"x-request-id", request_id.encode())] if request_id else []
        refusal = self._refusal()
        if refusal is not None:
            await send_json(send, 503, error_body(refusal[1], type="server_error", code=refusal[0]),
                            [*RETRY_AFTER, *echo])
            self.metrics.observe(route, 503, time.perf_counter() - started)
            request_id_var.reset(token)
            return
        adapter = _header(scope, ADAPTER_HEADER.encode()), _header(scope, ADAPTER_PATH_HEADER.encode())
        if adapter[0] and adapter[1]:
            handler = self._with_adapter(handler, unquote(adapter[0]), unquote(adapter[1]))
        self.state.begin()
        self.metrics.in_flight.inc()
        status = 500
        try:
            status = await self._answer(handler, receive, send, echo)
        finally:
            self.state.end()
            self.metrics.in_flight.dec()
            self.metrics.observe(route, status, time.perf_counter() - started)
            request_id_var.reset(token)

    async def _serve_traced_work(self, spans: tracing.Tracing, route: str, handler: WorkHandler,
                                 scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """`_serve_work` inside a server span, the child of the caller's trace context (the gateway's span)."""
        path = scope["path"]
        span = spans.server_span(f"POST {path}", scope["headers"], {
            tracing.HTTP_METHOD: "POST", tracing.HTTP_ROUTE: path, tracing.ROUTE: route,
            tracing.MODEL: self.spec.name, tracing.REPLICA_ID: self.replica_id})
        request_id = _header(scope, b"x-request-id")
        if request_id:
            span.set_attribute(tracing.REQUEST_ID, request_id)

        async def traced(body: Any) -> Any:
            requested = body.get("model") if isinstance(body, dict) else None
            if isinstance(requested, str):
                span.set_attribute(tracing.REQUEST_MODEL, requested)
            return span.observe_answer(await handler(body))

        try:
            await self._serve_work(route, traced, scope, receive, span.wrap_send(send))
        finally:
            span.end()

    async def _answer(self, handler: WorkHandler, receive: Receive, send: Send,
                      echo: list[tuple[bytes, bytes]]) -> int:
        """Run one request to its last byte; returns the HTTP status sent (499: the client left)."""
        try:
            body = parse_json(await read_body(receive, self.max_body_bytes))
            result = await _unless_client_leaves(handler(body), receive)
            if not is_stream(result):
                payload = dumps(result)
            else:
                stream = result.__aiter__()
                try:
                    # The first chunk before the headers: a model failing at once gets a real 500.
                    try:
                        first = await _unless_client_leaves(stream.__anext__(), receive)
                    except StopAsyncIteration:  # an empty stream is still a stream: just [DONE]
                        first = b""
                    failure = await send_stream(send, receive, first, stream, echo)
                finally:
                    await _close(stream)
                if failure is not None:
                    log.error("stream failed after it started: %s", failure, exc_info=failure)
                return 200
        except _ClientDisconnected:
            log.info("client disconnected before the answer; its work was cancelled")
            return CLIENT_CLOSED_REQUEST
        except SlipwayError as exc:
            if exc.status_code >= 500:
                log.error("request failed: %s", exc.message, exc_info=exc)
            await send_json(send, exc.status_code, error_payload(exc), echo)
            return exc.status_code
        except Exception as exc:  # noqa: BLE001 - the model's failure is the request's, not the server's
            log.error("model raised %s: %s", type(exc).__name__, exc, exc_info=exc)
            await send_json(send, 500, error_body(f"the model raised {type(exc).__name__}: {exc}",
                                                  type="server_error", code="model_error"), echo)
            return 500
        await send_json(send, 200, payload, echo)
        return 200

    async def _predict(self, body: Any) -> Any:
        assert self.runtime is not None
        return await self.runtime.predict(body)

    async def _embeddings(self, body: Any) -> Any:
        assert self.runtime is not None
        if not isinstance(body, dict):
            raise BadRequestError(f"the body must be a JSON object with 'model' and 'input', not {type(body).__name__}")
        try:
            request = EmbeddingsRequest.model_validate(body)
        except ValidationError as exc:
            raise bad_request_from_validation(exc) from None
        return await self.runtime.embeddings(request)

    async def _chat_completions(self, body: Any) -> Any:
        assert self.runtime is not None
        return await self.runtime.chat_completions(_object(body))

    async def _completions(self, body: Any) -> Any:
        assert self.runtime is not None
        return await self.runtime.completions(_object(body))

    # -- LoRA adapters (runtimes that serve them: the llm builtin engine) -------------------

    async def _load_lora_adapter(self, body: Any) -> Any:
        return await self._adapter_method("load_lora_adapter")(body)

    async def _unload_lora_adapter(self, body: Any) -> Any:
        return await self._adapter_method("unload_lora_adapter")(body)

    def _with_adapter(self, handler: WorkHandler, name: str, path: str) -> WorkHandler:
        async def with_adapter(body: Any) -> Any:
            await self._adapter_method("ensure_lora_adapter")(name, path)
            return await handler({**body, "model": name} if isinstance(body, dict) else body)
        return with_adapter

    def _adapter_method(self, name: str) -> Callable[..., Any]:
        method = getattr(self.runtime, name, None)
        if method is None:
            engine = f", engine {self.spec.engine}" if self.spec.engine else ""
            raise UnsupportedRouteError(
                f"this replica (kind {self.spec.kind}{engine}) does not load LoRA adapters at run time; the llm "
                "builtin engine does. Serve the adapter merged, or list it under adapters: in slipway.yaml")
        return method

    def _adapters(self) -> list[dict[str, str]]:
        """The runtime's registered adapters; for runtimes without a registry, those of slipway.yaml."""
        listing = getattr(self.runtime, "lora_adapters", None)
        if listing is not None:
            return listing()
        return [{"name": name, "path": path} for name, path in self.spec.adapters.items()]

    def _models(self) -> dict[str, Any]:
        """GET /v1/models in OpenAI's list shape, adapters with the base as `parent` (as vLLM lists them)."""
        base = {"id": self.spec.name, "object": "model", "created": self._created, "owned_by": "slipway",
                "root": self.spec.weights or self.spec.name, "parent": None}
        adapters = [{"id": adapter["name"], "object": "model", "created": self._created, "owned_by": "slipway",
                     "root": adapter["path"], "parent": self.spec.name} for adapter in self._adapters()]
        return {"object": "list", "data": [base, *adapters]}


class _ClientDisconnected(Exception):
    """The client closed its connection before the answer was sent."""


async def _unless_client_leaves(work: Awaitable[Any], receive: Receive) -> Any:
    """The result of `work`, or `_ClientDisconnected` once the client goes away, `work` cancelled.

    Only for waits before anything is sent: once the body is read, the next ASGI message can
    only be the disconnect.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():  # the client left, or this request itself was cancelled
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled() and watcher.done() and not watcher.cancelled():
        raise _ClientDisconnected()
    return task.result()


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _tokenizer_body(model_dir: Path, model: str, kv_block_size: int) -> bytes:
    """The JSON answer of GET /tokenizer: every tokenizer file of `model_dir` that exists."""
    files: dict[str, str] = {}
    binary_files: dict[str, str] = {}
    size = 0
    for names, into in ((TOKENIZER_TEXT_FILES, files), (TOKENIZER_BINARY_FILES, binary_files)):
        for name in names:
            path = model_dir / name
            if not path.is_file():
                continue
            data = path.read_bytes()
            size += len(data)
            if size > MAX_TOKENIZER_BYTES:
                raise ValueError(f"they exceed {MAX_TOKENIZER_BYTES} bytes")
            into[name] = data.decode("utf-8") if into is files else base64.b64encode(data).decode("ascii")
    if "tokenizer.json" not in files and "tokenizer.model" not in binary_files:
        raise ValueError(f"{model_dir} has neither tokenizer.json nor tokenizer.model")
    return dumps({"model": model, "kv_block_size": kv_block_size, "files": files, "binary_files": binary_files})


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequestError(f"the body must be a JSON object, not {type(body).__name__}")
    return body


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


async def _close(stream: Any) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # noqa: BLE001 - a generator failing while closing changes nothing sent
            log.warning("closing a stream raised", exc_info=True)
