"""The routing snapshot: everything a gateway needs to authenticate, resolve and route.

The control plane builds it from the store and bumps `version` on any change to keys, models,
environments, deployments or replicas. Gateways pull it (long poll with the last version they
have) and keep the last one, so a control-plane restart does not stop traffic.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from slipway.spec.package import RoutingPolicyName

SCOPE_ADMIN = "admin"
SCOPE_INVOKE = "invoke"
SCOPE_METRICS = "metrics"


class KeyEntry(BaseModel):
    """An active API key, by the sha256 hex digest of its secret."""

    key_id: str
    key_hash: str
    workspace_id: str
    scopes: list[str]
    models: list[str] | None = Field(None, description="Invoke keys limited to these model names; None: all.")


class ReplicaEntry(BaseModel):
    replica_id: str
    url: str
    ready: bool = True


class DeploymentEntry(BaseModel):
    deployment_id: str
    model_name: str
    number: int = Field(description="Deployment number within its model (1, 2, ...).")
    kind: str
    status: str
    routing: RoutingPolicyName = "least_load"
    capture: bool = False
    replicas: list[ReplicaEntry] = Field(default_factory=list)
    workspace_id: str | None = Field(
        None, description="The workspace that owns the deployment; gateways answer 404 to keys of other "
                          "workspaces. None: inferred from the models whose environments point at it.")


class ModelEntry(BaseModel):
    workspace_id: str
    name: str
    environments: dict[str, str] = Field(default_factory=dict, description="Environment name -> deployment id.")


class RoutingSnapshot(BaseModel):
    version: int = 0
    keys: list[KeyEntry] = Field(default_factory=list)
    models: list[ModelEntry] = Field(default_factory=list)
    deployments: list[DeploymentEntry] = Field(default_factory=list)
