"""JSON shapes of the management API: request bodies and responses, from store rows.

These models are the API's OpenAPI schema; `from_row` builders keep the mapping from store rows
in one place. Times are Unix seconds.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from slipway.store import DeploymentRow, EnvironmentRow, KeyRow, ModelRow, ReplicaRow, WorkspaceRow

T = TypeVar("T")


class ListOf(BaseModel, Generic[T]):
    object: str = "list"
    data: list[T]


# Requests ---------------------------------------------------------------------------------
class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScaleRequest(_Request):
    replicas: int = Field(ge=0, description="Desired number of replicas now.")


class AutoscalingPatch(_Request):
    """Any subset of the autoscaling settings; the rest keep their values."""

    min_replica: int | None = Field(None, description="Fewest replicas; 0 scales to zero after idle.")
    max_replica: int | None = Field(None, description="Most replicas.")
    concurrency_target: int | None = Field(None, description="In-flight requests one replica is sized for.")
    target_utilization_percentage: int | None = Field(None, description="Share of concurrency_target to aim for.")
    autoscaling_window: float | str | None = Field(None, description="Seconds of load averaged, e.g. 60 or '60s'.")
    scale_down_delay: float | str | None = Field(None, description="Seconds load must stay low, e.g. '15m'.")

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, exclude_none=True)


class PricingPatch(_Request):
    """Any subset of a deployment's prices, in one currency unit of your choice (e.g. US dollars).

    A price given replaces the old one, null removes it, and the rest stay. The usage API prices
    successful requests at the deployment's current prices (see `slipway.control.routes.usage`).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    per_1k_prompt_tokens: float | None = Field(
        None, ge=0, description="Per 1,000 input units: prompt tokens (LLMs, embeddings), inputs for custom models.")
    per_1k_completion_tokens: float | None = Field(
        None, ge=0, description="Per 1,000 output units: completion tokens (LLMs), outputs for custom models.")
    per_request: float | None = Field(None, ge=0, description="Per successful request (status below 400).")
    per_replica_hour: float | None = Field(None, ge=0, description="Per hour of one replica running.")

    def changes(self) -> dict[str, float | None]:
        return self.model_dump(exclude_unset=True)


class PromoteRequest(_Request):
    deployment_id: str | None = Field(None, description="The deployment to promote, by id ...")
    number: int | None = Field(None, ge=1, description="... or by its number within the model.")
    canary_percent: int | None = Field(
        None, ge=1, le=99, description="Make the deployment the environment's canary, getting this percent of its "
                                       "requests, instead of promoting it fully. Promoting the canary without it "
                                       "completes the promotion.")


class EnvironmentCreateRequest(_Request):
    name: str = Field(description="Environment name: lowercase letters, digits and dashes.")


class KeyCreateRequest(_Request):
    name: str = Field("", max_length=200, description="A label to tell keys apart.")
    scopes: list[str] = Field(default_factory=lambda: ["invoke"], description="admin, invoke and/or metrics.")
    models: list[str] | None = Field(None, description="Limit an invoke key to these models; null: every model.")


class WorkspaceCreateRequest(_Request):
    name: str = Field(description="Workspace name: lowercase letters, digits and dashes.")


# Responses --------------------------------------------------------------------------------
class CanaryOut(BaseModel):
    """A deployment trying out part of an environment's traffic before a full promotion."""

    deployment_id: str
    number: int | None = Field(description="The canary deployment's number within the model.")
    percent: int = Field(description="Percent of the environment's requests it gets once it has a ready replica.")


class EnvironmentOut(BaseModel):
    name: str
    deployment_id: str | None = Field(description="The deployment serving this environment now.")
    pending_deployment_id: str | None = Field(description="A promoted deployment taking over once ready.")
    canary: CanaryOut | None = Field(None, description="The environment's canary; null when it has none.")
    updated_at: float

    @classmethod
    def from_row(cls, row: EnvironmentRow, numbers: dict[str, int] | None = None) -> "EnvironmentOut":
        """`numbers` (deployment id -> number) fills in the canary's number."""
        canary = None
        if row.canary_deployment_id is not None:
            canary = CanaryOut(deployment_id=row.canary_deployment_id, percent=row.canary_percent or 0,
                               number=(numbers or {}).get(row.canary_deployment_id))
        return cls(name=row.name, deployment_id=row.deployment_id, pending_deployment_id=row.pending_deployment_id,
                   canary=canary, updated_at=row.updated_at)


class DeploymentOut(BaseModel):
    id: str
    object: str = "deployment"
    model: str
    number: int
    kind: str
    status: str = Field(description="deploying, active, failed or inactive.")
    status_detail: str = Field(description="Why the status is what it is; a failed load's traceback.")
    desired_replicas: int
    ready_replicas: int
    autoscaling: dict[str, Any]
    resources: dict[str, Any]
    package_sha256: str
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: DeploymentRow, *, ready_replicas: int = 0) -> "DeploymentOut":
        return cls(id=row.id, model=row.model_name, number=row.number, kind=str(row.spec.get("kind", "")),
                   status=row.status, status_detail=row.status_detail, desired_replicas=row.desired_replicas,
                   ready_replicas=ready_replicas, autoscaling=dict(row.spec.get("autoscaling") or {}),
                   resources=dict(row.spec.get("resources") or {}), package_sha256=row.package_sha256,
                   created_at=row.created_at, updated_at=row.updated_at)


class TrafficOut(BaseModel):
    """A deployment's last hour from the metric history (approximate: rates times bucket widths)."""

    requests: int = Field(description="Requests in the last hour.")
    errors: int = Field(description="Of those, answered with status >= 400.")
    requests_per_bucket: list[float] = Field(
        description="Requests in each 5-minute slice of the last hour, oldest first (12 values).")


class CanaryShareOut(BaseModel):
    environment: str
    percent: int = Field(description="Percent of the environment's requests the deployment gets as its canary.")


class DeploymentListItem(DeploymentOut):
    environments: list[str] = Field(description="Environments this deployment serves now.")
    pending_environments: list[str] = Field(description="Environments it takes over once it has a ready replica.")
    canary_environments: list[CanaryShareOut] = Field(
        default_factory=list, description="Environments trying this deployment out as their canary.")
    traffic: TrafficOut


class PricingOut(BaseModel):
    object: str = "deployment.pricing"
    deployment_id: str
    model: str
    number: int
    pricing: dict[str, float] = Field(description="The prices set; a price not listed costs nothing.")


class DeploymentErrorOut(BaseModel):
    """A failed request of the deployment, or a replica that failed or crashed."""

    at: float = Field(description="When: the request's arrival, or the replica's last change.")
    source: Literal["request", "replica"]
    status: str = Field(description="The HTTP status ('502') or the replica's state ('failed', 'crashed').")
    request_id: str | None = Field(description="The request id (its X-Request-Id) for a request.")
    replica_id: str | None = Field(description="The replica, for a replica error.")
    message: str = Field(description="What went wrong, in a line.")


class DeployedOut(DeploymentOut):
    environment: str = Field(description="The environment the deployment was placed in.")


class ModelSummary(BaseModel):
    id: str
    object: str = "model"
    name: str
    created_at: float

    @classmethod
    def from_row(cls, row: ModelRow) -> "ModelSummary":
        return cls(id=row.id, name=row.name, created_at=row.created_at)


class ModelOut(ModelSummary):
    environments: list[EnvironmentOut]
    deployments: list[DeploymentOut]


class PromotionOut(BaseModel):
    model: str
    environment: str
    deployment_id: str = Field(description="The deployment promoted (or rolled back to).")
    serving_deployment_id: str | None = Field(description="The deployment serving the environment right now.")
    pending: bool = Field(description="True while the promoted deployment is not ready and the old one serves.")
    canary_deployment_id: str | None = Field(None, description="The environment's canary after the change.")
    canary_percent: int | None = Field(None, description="Percent of the environment's requests the canary gets.")

    @classmethod
    def from_rows(cls, model: str, environment: EnvironmentRow, target: DeploymentRow) -> "PromotionOut":
        return cls(model=model, environment=environment.name, deployment_id=target.id,
                   serving_deployment_id=environment.deployment_id,
                   pending=environment.pending_deployment_id == target.id,
                   canary_deployment_id=environment.canary_deployment_id, canary_percent=environment.canary_percent)


class ReplicaOut(BaseModel):
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

    @classmethod
    def from_row(cls, row: ReplicaRow) -> "ReplicaOut":
        return cls(id=row.id, deployment_id=row.deployment_id, state=row.state, url=row.url, pid=row.pid,
                   restarts=row.restarts, exit_code=row.exit_code, detail=row.detail, started_at=row.started_at,
                   updated_at=row.updated_at)


class ReplicaLogs(BaseModel):
    replica_id: str
    state: str
    started_at: float
    logs: str


class KeyOut(BaseModel):
    id: str
    object: str = "api_key"
    name: str
    prefix: str = Field(description="The first characters of the secret, to recognise it.")
    scopes: list[str]
    models: list[str] | None
    created_at: float
    revoked_at: float | None

    @classmethod
    def from_row(cls, row: KeyRow) -> "KeyOut":
        return cls(id=row.id, name=row.name, prefix=row.prefix, scopes=list(row.scopes),
                   models=list(row.models) if row.models is not None else None, created_at=row.created_at,
                   revoked_at=row.revoked_at)


class KeyCreatedOut(KeyOut):
    key: str = Field(description="The secret. Shown this once; store it now.")


class WorkspaceOut(BaseModel):
    id: str
    name: str
    created_at: float
    admin_key: KeyCreatedOut | None = None

    @classmethod
    def from_row(cls, row: WorkspaceRow, admin_key: KeyCreatedOut | None = None) -> "WorkspaceOut":
        return cls(id=row.id, name=row.name, created_at=row.created_at, admin_key=admin_key)


class ReplicaHoursOut(BaseModel):
    """Replica time of one deployment over the usage range, and what it costs."""

    model: str
    deployment_id: str
    number: int
    replica_hours: float
    per_replica_hour: float | None = Field(description="The deployment's price per replica-hour; null if none.")
    cost: float | None = Field(description="replica_hours x per_replica_hour; null without that price.")


class UsageOut(BaseModel):
    object: str = "list"
    group_by: list[str]
    start: float | None
    end: float | None
    data: list[dict[str, Any]] = Field(
        description="One row per group: the grouping fields, the totals, and `cost` (null where nothing is priced).")
    replicas: list[ReplicaHoursOut] = Field(
        default_factory=list, description="Replica time per deployment over the range (not split by key or day).")
    total_cost: float | None = Field(None, description="Cost of the rows plus the replica time; null if unpriced.")
