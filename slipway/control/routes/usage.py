"""Usage: requests and units aggregated by any of model, key and day over a time range."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Query

from slipway.control.auth import Principal
from slipway.control.plane import ControlPlane
from slipway.control.routes.common import Caller
from slipway.control.schemas import UsageOut
from slipway.errors import SpecError
from slipway.spec.snapshot import SCOPE_ADMIN, SCOPE_METRICS
from slipway.store import USAGE_GROUPS


def parse_time(value: str | None, name: str) -> float | None:
    """Unix seconds from Unix seconds or ISO 8601 (a date, or a date-time; UTC unless it says otherwise)."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SpecError(f"{name}: {value!r} is not a time; write ISO 8601 like 2025-01-31 or "
                        "2025-01-31T12:00:00Z, or Unix seconds", code="invalid_request") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


def parse_group_by(value: str) -> list[str]:
    groups = [g.strip() for g in value.split(",") if g.strip()]
    unknown = [g for g in groups if g not in USAGE_GROUPS]
    if unknown:
        raise SpecError(f"group_by: cannot group by {', '.join(unknown)}; use a comma list of "
                        f"{', '.join(USAGE_GROUPS)}", code="invalid_request")
    return list(dict.fromkeys(groups))


def router(plane: ControlPlane) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["usage"])
    reader = Depends(Caller(plane, SCOPE_ADMIN, SCOPE_METRICS))

    @api.get("/usage", response_model=UsageOut, summary="Aggregated usage of the workspace")
    def get_usage(caller: Principal = reader,
                  group_by: str = Query("model", description="Comma list of model, key, day (empty: totals)."),
                  start: str | None = Query(None, description="From this time (inclusive): ISO 8601 or Unix seconds."),
                  end: str | None = Query(None, description="Until this time (exclusive): ISO 8601 or Unix seconds.")
                  ) -> UsageOut:
        groups = parse_group_by(group_by)
        start_at, end_at = parse_time(start, "start"), parse_time(end, "end")
        if start_at is not None and end_at is not None and end_at <= start_at:
            raise SpecError("end must be after start", code="invalid_request")
        totals = plane.store.usage.aggregate(caller.workspace_id, group_by=groups, start=start_at, end=end_at)
        return UsageOut(group_by=groups, start=start_at, end=end_at, data=[t.as_dict(tuple(groups)) for t in totals])

    return api
