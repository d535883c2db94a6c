"""The dashboard's HTTP surface: `create_dashboard_app(plane, sessions)`, served under /ui.

    GET  /             -> 302 /ui/
    GET  /ui/          the single page (static/index.html); its scripts call /api/v1 themselves
    GET  /ui/static/…  the page's CSS and JavaScript modules
    GET  /ui/session   who is signed in ({"signed_in": false} when nobody is: not an error)
    POST /ui/session   {"key": "sk-slw-…"} -> sets the session cookie
    POST /ui/logout    forgets the session and clears the cookie

POSTs must carry the dashboard header (`X-Slipway-Dashboard: 1`), which another origin's page
cannot send, so no other site can sign a visitor in or out. Errors use the OpenAI error shape.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from slipway.control.auth import DASHBOARD_HEADER, SESSION_COOKIE, Principal
from slipway.control.plane import ControlPlane
from slipway.errors import PermissionDeniedError, SlipwayError, SpecError
from slipway.spec.openai import error_body
from slipway.spec.snapshot import SCOPE_ADMIN
from slipway.web.sessions import DashboardSessions

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
DASHBOARD_PREFIX = "/ui"
# A sign-in body is a key and a little JSON; anything bigger is not a sign-in.
MAX_SIGN_IN_BYTES = 4096

# Same origin only, no inline script or style: a page that cannot run anything it did not ship.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def create_dashboard_app(plane: ControlPlane, sessions: DashboardSessions) -> Starlette:
    """The dashboard over `plane`; `sessions` is shared with the management API's session lookup."""

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})

    async def to_dashboard(request: Request) -> Response:
        return RedirectResponse(f"{DASHBOARD_PREFIX}/", status_code=302)

    async def whoami(request: Request) -> Response:
        session_id = request.cookies.get(SESSION_COOKIE, "")
        principal = await asyncio.to_thread(sessions.principal, session_id) if session_id else None
        if principal is None:
            return _json({"signed_in": False})
        return _json(_signed_in(principal))

    async def sign_in(request: Request) -> Response:
        _require_dashboard_header(request)
        key = _key_from_body(await _read_small_body(request))
        principal = await asyncio.to_thread(plane.authenticate, key)
        if SCOPE_ADMIN not in principal.scopes:
            raise PermissionDeniedError(f"key {principal.key_id} lacks the 'admin' scope the dashboard needs; "
                                        "sign in with an admin key (slipway keys create --scope admin)")
        session_id = sessions.open(principal)
        log.info("dashboard sign-in with key %s (workspace %s)", principal.key_id, principal.workspace_id)
        response = _json(_signed_in(principal))
        response.set_cookie(SESSION_COOKIE, session_id, path="/", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def sign_out(request: Request) -> Response:
        _require_dashboard_header(request)
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id:
            sessions.close(session_id)
        response = _json({"signed_out": True})
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def not_found(request: Request) -> Response:
        return _error(404, f"no dashboard page {request.url.path}; the dashboard is at {DASHBOARD_PREFIX}/",
                      code="not_found")

    routes = [
        Route("/", to_dashboard),
        Route(DASHBOARD_PREFIX, to_dashboard),
        Route(f"{DASHBOARD_PREFIX}/", index),
        Route(f"{DASHBOARD_PREFIX}/session", whoami, methods=["GET"]),
        Route(f"{DASHBOARD_PREFIX}/session", sign_in, methods=["POST"]),
        Route(f"{DASHBOARD_PREFIX}/logout", sign_out, methods=["POST"]),
        Mount(f"{DASHBOARD_PREFIX}/static", StaticFiles(directory=STATIC_DIR)),
        Route("/{rest:path}", not_found),
    ]
    app = Starlette(routes=routes, exception_handlers={SlipwayError: _slipway_error, 404: _http_404,
                                                       405: _http_405})
    return SecurityHeaders(app)


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every response of the wrapped app."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      *((k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items())]
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


def _require_dashboard_header(request: Request) -> None:
    if request.headers.get(DASHBOARD_HEADER) != "1":
        raise PermissionDeniedError(f"send the header '{DASHBOARD_HEADER}: 1' with dashboard session requests",
                                    code="missing_dashboard_header")


async def _read_small_body(request: Request) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_SIGN_IN_BYTES:
            raise SpecError(f"sign-in body is over {MAX_SIGN_IN_BYTES} bytes; send only {{\"key\": \"sk-slw-...\"}}",
                            code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _key_from_body(body: bytes) -> str:
    try:
        payload = json.loads(body or b"null")
    except ValueError:
        payload = None
    key = payload.get("key") if isinstance(payload, dict) else None
    if not isinstance(key, str) or not key.strip():
        raise SpecError('send the API key as JSON: {"key": "sk-slw-..."}', code="invalid_request")
    return key.strip()


def _signed_in(principal: Principal) -> dict:
    return {"signed_in": True, "workspace_id": principal.workspace_id, "key_id": principal.key_id,
            "scopes": sorted(principal.scopes)}


def _json(payload: dict) -> JSONResponse:
    return JSONResponse(payload, headers={"cache-control": "no-store"})


def _error(status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type=type, code=code), status_code=status,
                        headers={"cache-control": "no-store"})


async def _slipway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SlipwayError)
    return _error(exc.status_code, exc.message, type=exc.error_type, code=exc.code)


async def _http_404(request: Request, exc: Exception) -> Response:
    return _error(404, f"no dashboard page {request.url.path}; the dashboard is at {DASHBOARD_PREFIX}/",
                  code="not_found")


async def _http_405(request: Request, exc: Exception) -> Response:
    return _error(405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed")
