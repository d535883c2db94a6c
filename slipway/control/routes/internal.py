"""The routing snapshot for gateways in other processes: a long poll by version number.

    GET /internal/snapshot?after=N&timeout=S   -> RoutingSnapshot (newer than N, or the current one after S)

It holds every workspace's keys (as digests) and routes, so only admin keys of the workspace
created at bootstrap may read it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from slipway.control.auth import Principal
from slipway.control.plane import ControlPlane
from slipway.control.routes.common import Caller
from slipway.errors import NotFoundError
from slipway.spec.snapshot import RoutingSnapshot


def router(plane: ControlPlane) -> APIRouter:
    api = APIRouter(prefix="/internal", tags=["internal"])
    admin = Depends(Caller(plane))

    @api.get("/snapshot", response_model=RoutingSnapshot, summary="The routing snapshot (long poll)")
    async def snapshot(caller: Principal = admin,
                       after: int = Query(-1, description="The version the caller has; wait for a newer one."),
                       timeout: float = Query(0.0, ge=0, description="Seconds to wait for a newer version.")
                       ) -> RoutingSnapshot:
        if plane.system_workspace_id is not None and caller.workspace_id != plane.system_workspace_id:
            raise NotFoundError("no route GET /internal/snapshot for this key; use the admin key saved at "
                                "$SLIPWAY_HOME/admin.key")
        return await plane.snapshots.wait_newer(after, min(timeout, plane.config.snapshot_max_wait))

    return api
