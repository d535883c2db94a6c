"""Metrics: a deployment's recent history for charts, and the control plane's Prometheus page.

    GET /api/v1/deployments/{id}/metrics?window=1h   the series (admin or metrics key; workspace-scoped)
    GET /metrics                                     Prometheus text, slipway_control_* (no key: names and
                                                     counts only, like a replica's /metrics)
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Sequence

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field

from slipway.control.auth import Principal
from slipway.control.plane import ControlPlane
from slipway.control.routes.common import Caller
from slipway.errors import SpecError
from slipway.observe.history import SeriesPoint
from slipway.spec.snapshot import SCOPE_ADMIN, SCOPE_METRICS

_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


class MetricPoint(BaseModel):
    """One bucket of a deployment's history; null where there was nothing to measure."""

    t: float = Field(description="Start of the bucket, Unix seconds.")
    step: float = Field(description="Width of the bucket in seconds (5 for the last 15 minutes, 60 before).")
    requests_per_second: float
    error_rate: float | None = Field(
        description="Share of requests answered with status >= 400; null without requests.")
    latency_p50_seconds: float | None = Field(description="Median request duration at the replicas.")
    latency_p99_seconds: float | None
    ttft_p50_seconds: float | None = Field(description="Median time to first token (LLM deployments).")
    ttft_p99_seconds: float | None
    output_tokens_per_second: float | None = Field(description="Tokens generated per second (LLM deployments).")
    in_flight: float | None = Field(description="Mean requests in flight over the bucket.")
    queued: float | None = Field(description="Mean requests waiting for a replica over the bucket.")
    replicas_ready: int
    replicas_desired: int


class DeploymentMetricsOut(BaseModel):
    object: str = "deployment.metrics"
    deployment_id: str
    window_seconds: float
    start: float = Field(description="Unix seconds: the window's start.")
    end: float = Field(description="Unix seconds: now.")
    data: list[MetricPoint] = Field(description="Buckets oldest first; a gap means the control plane was not sampling.")


def parse_window(value: str, *, longest: float) -> float:
    """Seconds from '90s', '15m', '1h', '1d' or plain seconds; at most `longest`."""
    match = _WINDOW.match(value or "")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise SpecError(f"window: {value!r} is not a duration; write e.g. 15m, 1h or 24h", code="invalid_request")
    if seconds > longest:
        raise SpecError(f"window: {value} is longer than the {_duration(longest)} of history kept; "
                        f"ask for at most {_duration(longest)}", code="invalid_request")
    return seconds


def router(plane: ControlPlane, *, extra_registries: Sequence[CollectorRegistry] = ()) -> APIRouter:
    """The routes; `extra_registries` are rendered on /metrics after the control plane's own
    (e.g. the gateway's, when both run in one process)."""
    api = APIRouter(tags=["metrics"])
    reader = Depends(Caller(plane, SCOPE_ADMIN, SCOPE_METRICS))
    longest = max(tier.keep for tier in plane.history.config.tiers)

    @api.get("/api/v1/deployments/{deployment_id}/metrics", response_model=DeploymentMetricsOut,
             summary="A deployment's recent requests, latency, tokens, load and replicas")
    async def deployment_metrics(
        deployment_id: str, caller: Principal = reader,
        window: str = Query("1h", description="How far back: e.g. 15m, 1h, 24h (at most 24h)."),
    ) -> DeploymentMetricsOut:
        seconds = parse_window(window, longest=longest)
        deployment = await asyncio.to_thread(plane.get_deployment, caller.workspace_id, deployment_id)
        now = time.time()
        points = plane.history.series(deployment.id, now - seconds, now)
        return DeploymentMetricsOut(deployment_id=deployment.id, window_seconds=seconds, start=now - seconds,
                                    end=now, data=[_point(p) for p in points])

    @api.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        body = plane.render_metrics() + b"".join(generate_latest(r) for r in extra_registries)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return api


def _point(point: SeriesPoint) -> MetricPoint:
    return MetricPoint(**{name: getattr(point, name) for name in MetricPoint.model_fields})


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
