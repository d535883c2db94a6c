"""Usage: requests, units and cost aggregated by any of model, key and day over a time range.

Cost comes from each deployment's prices (`PATCH /api/v1/deployments/{id}/pricing`), at the
prices set now: changing a price reprices past usage too. Two kinds of price:

- Usage prices (per 1k prompt tokens = input units, per 1k completion tokens = output units,
  per request) are charged for successful requests (status below 400) and land in each row's
  `cost`. A row spanning several deployments of a model adds up each deployment's share at its
  own prices; `cost` is null when none of them has a usage price.
- Replica time (per replica-hour) belongs to no key or day, so it is listed apart, per
  deployment, in `replicas`. Replica-hours come from the replicas table: each replica row counts
  from its `started_at` until it stopped (its `updated_at` once it is stopped, failed or crashed)
  or until now while it is starting, ready or draining, clipped to [start, end). Two limits
  follow from what that table keeps: a replica restarted in place counts only from its newest
  start, and only the 20 most recent gone replicas of each deployment are kept, so long histories
  of scale-to-zero churn count less than they ran.

`total_cost` adds both; every money figure is rounded to 6 decimals.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from typing import Any, Iterable, Mapping

from fastapi import APIRouter, Depends, Query

from slipway.control.auth import Principal
from slipway.control.plane import ControlPlane
from slipway.control.routes.common import Caller
from slipway.control.schemas import ReplicaHoursOut, UsageOut
from slipway.errors import SpecError
from slipway.spec.snapshot import SCOPE_ADMIN, SCOPE_METRICS
from slipway.store import USAGE_GROUPS, DeploymentRow, ReplicaRow
from slipway.store.repositories.replicas import LIVE_STATES
from slipway.store.repositories.usage import BillableUnits

MONEY_DIGITS = 6
SECONDS_PER_HOUR = 3600.0


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


# Pure cost arithmetic -------------------------------------------------------------------------
def usage_cost(units: BillableUnits, prices: Mapping[str, float]) -> float | None:
    """What `units` cost at `prices`; None when the prices hold no usage price."""
    parts = [(prices.get("per_1k_prompt_tokens"), units.input_units / 1000),
             (prices.get("per_1k_completion_tokens"), units.output_units / 1000),
             (prices.get("per_request"), units.requests)]
    priced = [price * amount for price, amount in parts if price is not None]
    return sum(priced) if priced else None


def replica_hours(replicas: Iterable[ReplicaRow], *, start: float | None, end: float | None,
                  now: float) -> dict[str, float]:
    """Hours each deployment's replicas ran within [start, end) (see the module docstring)."""
    window_end = min(end, now) if end is not None else now
    hours: dict[str, float] = defaultdict(float)
    for replica in replicas:
        stopped = now if replica.state in LIVE_STATES else replica.updated_at
        begin = max(replica.started_at, start) if start is not None else replica.started_at
        finish = min(stopped, window_end)
        if finish > begin:
            hours[replica.deployment_id] += (finish - begin) / SECONDS_PER_HOUR
    return dict(hours)


def add_costs(rows: list[dict[str, Any]], groups: list[str], billable: Iterable[BillableUnits],
              pricing: Mapping[str, Mapping[str, float]]) -> None:
    """Set each aggregated row's `cost` from the billable units of its group (in place)."""
    cost_of: dict[tuple, float] = {}
    for units in billable:
        cost = usage_cost(units, pricing.get(units.deployment_id or "", {}))
        if cost is not None:
            cost_of[units.groups] = cost_of.get(units.groups, 0.0) + cost
    for row in rows:
        key = tuple(row["key_id" if g == "key" else g] for g in groups)
        row["cost"] = _money(cost_of.get(key))


def replica_costs(deployments: Iterable[DeploymentRow], hours: Mapping[str, float],
                  pricing: Mapping[str, Mapping[str, float]]) -> list[ReplicaHoursOut]:
    out = []
    for deployment in deployments:
        spent = hours.get(deployment.id, 0.0)
        if spent <= 0:
            continue
        price = pricing.get(deployment.id, {}).get("per_replica_hour")
        out.append(ReplicaHoursOut(model=deployment.model_name, deployment_id=deployment.id, number=deployment.number,
                                   replica_hours=round(spent, 4), per_replica_hour=price,
                                   cost=_money(spent * price if price is not None else None)))
    return out


def _money(value: float | None) -> float | None:
    return None if value is None else round(value, MONEY_DIGITS)


def router(plane: ControlPlane) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["usage"])
    reader = Depends(Caller(plane, SCOPE_ADMIN, SCOPE_METRICS))

    @api.get("/usage", response_model=UsageOut, summary="Aggregated usage and cost of the workspace")
    def get_usage(caller: Principal = reader,
                  group_by: str = Query("model", description="Comma list of model, key, day (empty: totals)."),
                  start: str | None = Query(None, description="From this time (inclusive): ISO 8601 or Unix seconds."),
                  end: str | None = Query(None, description="Until this time (exclusive): ISO 8601 or Unix seconds.")
                  ) -> UsageOut:
        groups = parse_group_by(group_by)
        start_at, end_at = parse_time(start, "start"), parse_time(end, "end")
        if start_at is not None and end_at is not None and end_at <= start_at:
            raise SpecError("end must be after start", code="invalid_request")
        store, workspace_id = plane.store, caller.workspace_id
        totals = store.usage.aggregate(workspace_id, group_by=groups, start=start_at, end=end_at)
        rows = [t.as_dict(tuple(groups)) for t in totals]
        deployments = store.deployments.list_for_workspace(workspace_id)
        pricing = store.deployments.pricing([d.id for d in deployments])
        if pricing:
            add_costs(rows, groups, store.usage.billable_units(workspace_id, group_by=groups, start=start_at,
                                                               end=end_at), pricing)
        else:
            for row in rows:
                row["cost"] = None
        hours = replica_hours(store.replicas.list_for_deployments([d.id for d in deployments]),
                              start=start_at, end=end_at, now=time.time())
        replicas = replica_costs(deployments, hours, pricing)
        costs = [r["cost"] for r in rows if r["cost"] is not None] + [r.cost for r in replicas if r.cost is not None]
        return UsageOut(group_by=groups, start=start_at, end=end_at, data=rows, replicas=replicas,
                        total_cost=_money(sum(costs)) if costs else None)

    return api
