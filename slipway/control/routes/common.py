"""What every route module shares: the key check, as a FastAPI dependency."""

from __future__ import annotations

from fastapi import Request

from slipway.control.auth import Principal, dashboard_principal, key_from_headers
from slipway.control.plane import ControlPlane
from slipway.spec.snapshot import SCOPE_ADMIN


class Caller:
    """Dependency: the authenticated key, which must have one of `scopes` (admin by default).

    A plain `def`, so FastAPI runs the store lookup in a worker thread. A dashboard session
    stands in for the key on dashboard requests (see `dashboard_principal`).
    """

    def __init__(self, plane: ControlPlane, *scopes: str) -> None:
        self.plane = plane
        self.scopes = scopes or (SCOPE_ADMIN,)

    def __call__(self, request: Request) -> Principal:
        principal = dashboard_principal(request) or self.plane.authenticate(key_from_headers(request.headers))
        principal.require(*self.scopes, action=f"{request.method} {request.url.path}")
        return principal
