"""Deployments: upload a package, read one, its replicas and logs, scale, autoscaling, deactivate."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query, Request

from slipway.control.auth import Principal
from slipway.control.packages import PackageTooLargeError
from slipway.control.plane import ControlPlane
from slipway.control.routes.common import Caller
from slipway.control.schemas import (
    AutoscalingPatch,
    DeployedOut,
    DeploymentOut,
    ListOf,
    ReplicaLogs,
    ReplicaOut,
    ScaleRequest,
)
from slipway.errors import SpecError
from slipway.store import DeploymentRow

_PACKAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "The package folder as a .tar.gz (what `slipway deploy` sends).",
        "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def router(plane: ControlPlane) -> APIRouter:
    api = APIRouter(prefix="/api/v1/deployments", tags=["deployments"])
    admin = Depends(Caller(plane))

    def out(deployment: DeploymentRow) -> DeploymentOut:
        ready = plane.store.replicas.ready_counts([deployment.id]).get(deployment.id, 0)
        return DeploymentOut.from_row(deployment, ready_replicas=ready)

    @api.post("", status_code=201, response_model=DeployedOut, openapi_extra=_PACKAGE_BODY,
              summary="Deploy a package as the next deployment of its model")
    async def create_deployment(
        request: Request,
        caller: Principal = admin,
        environment: str | None = Query(None, description="Environment to place it in (default development)."),
        promote: bool = Query(False, description="Place it in production."),
    ) -> DeployedOut:
        package = await _read_body(request, plane.config.packages.max_upload_bytes)
        result = await asyncio.to_thread(plane.deploy, caller.workspace_id, package, environment=environment,
                                         promote=promote)
        return DeployedOut(**DeploymentOut.from_row(result.deployment).model_dump(),
                           environment=result.environment.name)

    @api.get("/{deployment_id}", response_model=DeploymentOut, summary="One deployment")
    def get_deployment(deployment_id: str, caller: Principal = admin) -> DeploymentOut:
        return out(plane.get_deployment(caller.workspace_id, deployment_id))

    @api.delete("/{deployment_id}", response_model=DeploymentOut, summary="Deactivate a deployment (stop its replicas)")
    def deactivate_deployment(deployment_id: str, caller: Principal = admin) -> DeploymentOut:
        return out(plane.deactivate(caller.workspace_id, deployment_id))

    @api.get("/{deployment_id}/replicas", response_model=ListOf[ReplicaOut], summary="A deployment's replicas")
    def list_replicas(deployment_id: str, caller: Principal = admin,
                      include_stopped: bool = Query(False, description="Also list replicas stopped on purpose.")):
        deployment = plane.get_deployment(caller.workspace_id, deployment_id)
        rows = plane.store.replicas.list(deployment.id, include_stopped=include_stopped)
        return ListOf[ReplicaOut](data=[ReplicaOut.from_row(r) for r in rows])

    @api.get("/{deployment_id}/logs", response_model=ListOf[ReplicaLogs],
             summary="Recent log lines of each replica, most recent first (failed ones too)")
    async def replica_logs(deployment_id: str, caller: Principal = admin,
                           tail: int = Query(200, ge=1, description="Lines per replica.")):
        tail = min(tail, plane.config.log_tail_max)
        logs = await plane.logs(caller.workspace_id, deployment_id, tail=tail)
        return ListOf[ReplicaLogs](data=[ReplicaLogs(replica_id=r.id, state=r.state, started_at=r.started_at, logs=text)
                                         for r, text in logs])

    @api.post("/{deployment_id}/scale", response_model=DeploymentOut, summary="Set the desired replica count")
    def scale_deployment(deployment_id: str, body: ScaleRequest, caller: Principal = admin) -> DeploymentOut:
        return out(plane.scale(caller.workspace_id, deployment_id, body.replicas))

    @api.patch("/{deployment_id}/autoscaling", response_model=DeploymentOut, summary="Change autoscaling settings")
    def patch_autoscaling(deployment_id: str, body: AutoscalingPatch, caller: Principal = admin) -> DeploymentOut:
        changes = body.changes()
        if not changes:
            raise SpecError("nothing to change: give at least one autoscaling setting", code="invalid_request")
        return out(plane.set_autoscaling(caller.workspace_id, deployment_id, changes))

    return api


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it grows past `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PackageTooLargeError(f"package upload is {declared} bytes, over the limit of {limit}; "
                                   "keep large weights out of the package or raise the limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PackageTooLargeError(f"package upload is over the limit of {limit} bytes; "
                                       "keep large weights out of the package or raise the limit")
        chunks.append(chunk)
    if size == 0:
        raise SpecError("the request body is empty; send the package folder as a .tar.gz", code="invalid_package")
    return b"".join(chunks)
