"""What repositories return: plain frozen records, detached from any database session.

Callers never see SQLAlchemy objects, so a row can cross threads, be cached, and be turned into
JSON without touching the database again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

DeploymentStatus = Literal["deploying", "active", "failed", "inactive"]
DEPLOYMENT_STATUSES: tuple[str, ...] = ("deploying", "active", "failed", "inactive")
# Deployments whose replicas the control loop keeps running.
RUNNING_STATUSES: tuple[str, ...] = ("deploying", "active")


@dataclass(frozen=True)
class WorkspaceRow:
    id: str
    name: str
    created_at: float


@dataclass(frozen=True)
class KeyRow:
    """An API key without its secret: only the sha256 hex digest is ever stored."""

    id: str
    workspace_id: str
    name: str
    prefix: str
    key_hash: str
    scopes: tuple[str, ...]
    models: tuple[str, ...] | None
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class ModelRow:
    id: str
    workspace_id: str
    name: str
    created_at: float


@dataclass(frozen=True)
class DeploymentRow:
    id: str
    model_id: str
    workspace_id: str
    model_name: str
    number: int
    status: str
    status_detail: str
    spec: dict[str, Any]
    package_dir: str
    package_sha256: str
    desired_replicas: int
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class EnvironmentRow:
    id: int
    model_id: str
    name: str
    deployment_id: str | None
    pending_deployment_id: str | None
    created_at: float
    updated_at: float
    capture: bool = False
    """Traces of this environment's traffic are stored, whatever its deployment's package says."""
    canary_deployment_id: str | None = None
    """A second deployment of the model that gets `canary_percent` percent of the environment's requests."""
    canary_percent: int | None = None
    """The canary's share of the environment's requests (1-99); None without a canary."""


@dataclass(frozen=True)
class HistoryRow:
    environment_id: int
    deployment_id: str
    promoted_at: float


@dataclass(frozen=True)
class ReplicaRow:
    id: str
    deployment_id: str
    state: str
    url: str | None
    pid: int | None
    restarts: int
    exit_code: int | None
    detail: str
    started_at: float
    updated_at: float


@dataclass(frozen=True)
class UsageTotals:
    """One group of an aggregation; a grouping field is None when not grouped by it."""

    requests: int
    input_units: int
    output_units: int
    errors: int
    avg_latency_ms: float
    model: str | None = None
    key_id: str | None = None
    day: str | None = None

    def as_dict(self, group_by: tuple[str, ...]) -> dict[str, Any]:
        """The grouping fields asked for (key as key_id), then the totals."""
        groups = {"model": self.model, "key": self.key_id, "day": self.day}
        out: dict[str, Any] = {("key_id" if g == "key" else g): groups[g] for g in group_by}
        out.update(requests=self.requests, input_units=self.input_units, output_units=self.output_units,
                   errors=self.errors, avg_latency_ms=self.avg_latency_ms)
        return out
