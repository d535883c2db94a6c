"""Deployments: upload a package, list and read them, replicas and logs, scale, autoscaling, prices,
recent errors (routes.errors), deactivate.

`GET /api/v1/deployments` is the dashboard's front page in one request: every deployment of the
workspace with its ready replicas, the environments it serves and its last hour of traffic from
the metric history, at a fixed number of queries however many deployments there are.
"""

from __future__ import annotations

import asyncio
import time
from typing import Sequence

from fastapi import APIRouter, Depends, Query, Request

from slipway.control.auth import Principal
from slipway.control.packages import PackageTooLargeError
from slipway.control.plane import ControlPlane
from slipway.control.routes import errors
from slipway.control.routes.common import Caller
from slipway.control.schemas import (
    AutoscalingPatch,
    CanaryShareOut,
    DeployedOut,
    DeploymentListItem,
    DeploymentOut,
    ListOf,
    PricingOut,
    PricingPatch,
    ReplicaLogs,
    ReplicaOut,
    ScaleRequest,
    TrafficOut,
)
from slipway.errors import NotFoundError, SpecError
from slipway.observe.history import SeriesPoint
from slipway.store import DeploymentRow

TRAFFIC_WINDOW_SECONDS = 3600.0
TRAFFIC_SLICES = 12

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

    @api.get("", response_model=ListOf[DeploymentListItem],
             summary="Every deployment of the workspace, with environments and the last hour of traffic")
    def list_deployments(caller: Principal = admin):
        rows = plane.store.deployments.list_for_workspace(caller.workspace_id)
        ids = [d.id for d in rows]
        ready = plane.store.replicas.ready_counts(ids) if ids else {}
        environments = plane.store.deployments.environments_of_workspace(caller.workspace_id)
        canaries = plane.store.environments.canaries_of_workspace(caller.workspace_id)
        now = time.time()
        items = []
        for deployment in rows:
            served = environments.get(deployment.id, [])
            points = plane.history.series(deployment.id, now - TRAFFIC_WINDOW_SECONDS, now)
            items.append(DeploymentListItem(
                **DeploymentOut.from_row(deployment, ready_replicas=ready.get(deployment.id, 0)).model_dump(),
                environments=[name for name, pending in served if not pending],
                pending_environments=[name for name, pending in served if pending],
                canary_environments=[CanaryShareOut(environment=name, percent=percent)
                                     for name, percent in canaries.get(deployment.id, [])],
                traffic=traffic_summary(points, now)))
        return ListOf[DeploymentListItem](data=items)

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

    def pricing_out(deployment: DeploymentRow) -> PricingOut:
        prices = plane.store.deployments.pricing([deployment.id]).get(deployment.id, {})
        return PricingOut(deployment_id=deployment.id, model=deployment.model_name, number=deployment.number,
                          pricing=prices)

    @api.get("/{deployment_id}/pricing", response_model=PricingOut, summary="The deployment's prices")
    def get_pricing(deployment_id: str, caller: Principal = admin) -> PricingOut:
        return pricing_out(plane.get_deployment(caller.workspace_id, deployment_id))

    @api.patch("/{deployment_id}/pricing", response_model=PricingOut,
               summary="Set or remove prices (null removes one); GET /api/v1/usage turns them into cost")
    def patch_pricing(deployment_id: str, body: PricingPatch, caller: Principal = admin) -> PricingOut:
        changes = body.changes()
        if not changes:
            raise SpecError('nothing to change: give at least one price, e.g. {"per_request": 0.001}; '
                            "null removes a price", code="invalid_request")
        with plane.store.transaction() as tx:
            deployment = tx.deployments.get(deployment_id, workspace_id=caller.workspace_id)
            if deployment is None:
                raise NotFoundError(f"deployment {deployment_id!r} not found; `slipway ls` lists your deployments")
            prices = {**tx.deployments.pricing([deployment.id]).get(deployment.id, {}), **changes}
            prices = {name: value for name, value in prices.items() if value is not None}
            tx.deployments.set_pricing(deployment.id, prices, time.time())
        return pricing_out(deployment)

    api.include_router(errors.router(plane))
    return api


def traffic_summary(points: Sequence[SeriesPoint], now: float, *, window: float = TRAFFIC_WINDOW_SECONDS,
                    slices: int = TRAFFIC_SLICES) -> TrafficOut:
    """Requests and errors over the last `window` seconds, and per slice of it, from history points.

    A point holds a rate over its bucket, so its requests are taken as rate x bucket width; a
    bucket the control plane sampled only partly (it was starting) is counted as if whole.
    """
    start = now - window
    width = window / slices
    per_slice = [0.0] * slices
    requests = errors = 0.0
    for point in points:
        if point.t + point.step <= start:
            continue
        count = point.requests_per_second * point.step
        requests += count
        errors += count * (point.error_rate or 0.0)
        index = min(max(int((point.t - start) // width), 0), slices - 1)
        per_slice[index] += count
    return TrafficOut(requests=round(requests), errors=round(errors),
                      requests_per_bucket=[round(c, 2) for c in per_slice])


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
