"""The management API: `create_control_app(plane)`, a FastAPI app under /api/v1 (and /internal).

Every /api/v1 route authenticates with an API key of the store and acts inside the key's workspace:
another workspace's model or deployment is "not found", exactly like a missing one. Every error,
including validation errors, unknown routes and crashes, comes back in the OpenAI error shape
{"error": {"message", "type", "param", "code"}}. The OpenAPI document is /api/v1/openapi.json.
GET /metrics is the control plane's Prometheus page, without a key (names and counts, no secrets).
"""

from __future__ import annotations

import logging
import uuid
from typing import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException

from slipway.control.auth import SessionLookup
from slipway.control.evaluation import EvalServices
from slipway.control.learning import LearningServices
from slipway.control.plane import ControlPlane
from slipway.control.routes import (
    datasets, deployments, evals, fine_tuning, internal, keys, metrics, models, traces, usage,
)
from slipway.errors import AuthError, SlipwayError
from slipway.observe import request_id_var
from slipway.spec.openai import error_body

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"

_TYPE_BY_STATUS = {401: "authentication_error", 403: "permission_error"}
_CODE_BY_STATUS = {400: "invalid_request", 401: "invalid_api_key", 403: "insufficient_scope", 404: "not_found",
                   405: "method_not_allowed", 409: "conflict", 413: "request_too_large"}


def create_control_app(plane: ControlPlane, *, session_lookup: SessionLookup | None = None,
                       metrics_registries: Sequence[CollectorRegistry] = (),
                       learning: LearningServices | None = None, evals_services: EvalServices | None = None) -> FastAPI:
    """The management API over `plane`.

    `session_lookup` (session id -> principal or None) lets the dashboard's session cookie stand
    in for a key on /api/v1; without it only keys are accepted. `metrics_registries` are added to
    GET /metrics after the control plane's own families (e.g. the in-process gateway's).
    `learning` gives the dataset and fine-tuning routes what lies outside the control package
    (dataset files, waking the job supervisor); without it dataset uploads answer 503.
    `evals_services` does the same for eval suites and the gate (validation in `slipway.evals`,
    waking the eval worker); without it suite uploads and gates answer 503.
    """
    app = FastAPI(
        title="slipway management API",
        version="1",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.plane = plane
    app.state.session_lookup = session_lookup
    for module in (deployments, models, keys, usage, internal):
        app.include_router(module.router(plane))
    app.include_router(metrics.router(plane, extra_registries=metrics_registries))
    learning = learning or LearningServices()
    app.include_router(traces.router(plane))
    app.include_router(datasets.router(plane, learning))
    app.include_router(fine_tuning.router(plane, learning))
    app.include_router(evals.router(plane, evals_services or EvalServices()))
    _install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    return app


def _error(status: int, message: str, *, type: str | None = None, code: str | None = None,
           param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    error_type = type or _TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = error_body(message, type=error_type, code=code or _CODE_BY_STATUS.get(status), param=param)
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SlipwayError)
    async def _slipway_error(request: Request, exc: SlipwayError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthError) and exc.status_code == 401 else None
        if exc.status_code >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        return _error(exc.status_code, exc.message, type=exc.error_type, code=exc.code,
                      param=getattr(exc, "param", None), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems, param = [], None
        for error in exc.errors():
            location = ".".join(str(part) for part in error.get("loc", ()))
            param = param or location
            if error.get("type") == "json_invalid":
                problems.append("the request body is not valid JSON; send a JSON object")
            else:
                problems.append(f"{location}: {error.get('msg', 'invalid value')}")
        return _error(400, "invalid request: " + "; ".join(problems), code="invalid_request", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}; see /api/v1/openapi.json"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /api/v1/openapi.json"
        return _error(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s raised", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); the control plane's log has the details",
                      code="internal_error")


class RequestIdMiddleware:
    """Gives every request an id (the caller's X-Request-Id, or a new one) for logs and the response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or ()).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = incoming[:100] if incoming else uuid.uuid4().hex
        token = request_id_var.set(request_id)

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (REQUEST_ID_HEADER.encode(), request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
