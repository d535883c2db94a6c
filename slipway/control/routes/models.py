"""Models and their environments: list, detail, create an environment, set its capture, promote, roll back.

    PATCH /api/v1/models/{name}/environments/{env}   {"capture": true}: the gateway stores traces of all
                                                      the environment's traffic (the deployment's own
                                                      `capture: true` in slipway.yaml does so too)
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from slipway.control.auth import Principal
from slipway.control.plane import ControlPlane
from slipway.control.routes.common import Caller
from slipway.control.schemas import (
    DeploymentOut,
    EnvironmentCreateRequest,
    EnvironmentOut,
    ListOf,
    ModelOut,
    ModelSummary,
    PromoteRequest,
    PromotionOut,
)
from slipway.store import DeploymentRow, EnvironmentRow


class EnvironmentSettingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    capture: bool = Field(description="Store request/response traces of all this environment's traffic.")


class EnvironmentSettingsOut(EnvironmentOut):
    capture: bool = Field(description="Whether traces of all this environment's traffic are stored.")

    @classmethod
    def from_row(cls, row: EnvironmentRow) -> "EnvironmentSettingsOut":
        return cls(**EnvironmentOut.from_row(row).model_dump(), capture=row.capture)


def router(plane: ControlPlane) -> APIRouter:
    api = APIRouter(prefix="/api/v1/models", tags=["models"])
    admin = Depends(Caller(plane))

    def promotion_out(model: str, environment: EnvironmentRow, target: DeploymentRow) -> PromotionOut:
        return PromotionOut(model=model, environment=environment.name, deployment_id=target.id,
                            serving_deployment_id=environment.deployment_id,
                            pending=environment.pending_deployment_id == target.id)

    @api.get("", response_model=ListOf[ModelSummary], summary="The workspace's models")
    def list_models(caller: Principal = admin):
        return ListOf[ModelSummary](data=[ModelSummary.from_row(m) for m in plane.store.models.list(caller.workspace_id)])

    @api.get("/{name}", response_model=ModelOut, summary="A model with its environments and deployments")
    def get_model(name: str, caller: Principal = admin) -> ModelOut:
        model = plane.get_model(caller.workspace_id, name)
        rows = plane.store.deployments.list_for_model(model.id)
        ready = plane.store.replicas.ready_counts([d.id for d in rows])
        deployments = [DeploymentOut.from_row(d, ready_replicas=ready.get(d.id, 0)) for d in rows]
        environments = [EnvironmentOut.from_row(e) for e in plane.store.environments.list(model.id)]
        return ModelOut(**ModelSummary.from_row(model).model_dump(), environments=environments,
                        deployments=deployments)

    @api.get("/{name}/environments", response_model=ListOf[EnvironmentOut], summary="A model's environments")
    def list_environments(name: str, caller: Principal = admin):
        model = plane.get_model(caller.workspace_id, name)
        return ListOf[EnvironmentOut](data=[EnvironmentOut.from_row(e) for e in plane.store.environments.list(model.id)])

    @api.post("/{name}/environments", status_code=201, response_model=EnvironmentOut,
              summary="Create a custom environment")
    def create_environment(name: str, body: EnvironmentCreateRequest, caller: Principal = admin) -> EnvironmentOut:
        return EnvironmentOut.from_row(plane.create_environment(caller.workspace_id, name, body.name))

    @api.patch("/{name}/environments/{environment}", response_model=EnvironmentSettingsOut,
               summary="Change an environment's settings (capture)")
    def update_environment(name: str, environment: str, body: EnvironmentSettingsRequest,
                           caller: Principal = admin) -> EnvironmentSettingsOut:
        row = plane.set_environment_capture(caller.workspace_id, name, environment, body.capture)
        return EnvironmentSettingsOut.from_row(row)

    @api.post("/{name}/environments/{environment}/promote", response_model=PromotionOut,
              summary="Point an environment at a deployment (it takes over once ready)")
    def promote(name: str, environment: str, body: PromoteRequest, caller: Principal = admin) -> PromotionOut:
        env, target = plane.promote(caller.workspace_id, name, environment, deployment_id=body.deployment_id,
                                    number=body.number)
        return promotion_out(name, env, target)

    @api.post("/{name}/environments/{environment}/rollback", response_model=PromotionOut,
              summary="Re-promote the deployment that served before the current one")
    def rollback(name: str, environment: str, caller: Principal = admin) -> PromotionOut:
        env, target = plane.rollback(caller.workspace_id, name, environment)
        return promotion_out(name, env, target)

    return api
