"""Models and their environments: list, detail, create an environment, set its capture, promote, canary,
roll back.

    PATCH  /api/v1/models/{name}/environments/{env}          {"capture": true}: the gateway stores traces of
                                                              all the environment's traffic (the deployment's
                                                              own `capture: true` in slipway.yaml does so too)
    POST   /api/v1/models/{name}/environments/{env}/promote  {"number": 2}: #2 takes over once ready;
                                                              {"number": 2, "canary_percent": 10}: #2 gets 10%
                                                              of the requests, the serving deployment the rest;
                                                              promoting the canary again without a percent
                                                              completes it
    DELETE /api/v1/models/{name}/environments/{env}/canary   all traffic back to the serving deployment
    POST   /api/v1/models/{name}/environments/{env}/rollback calls off a pending promotion or a canary, else
                                                              re-promotes the previous deployment
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
from slipway.store import EnvironmentRow


class EnvironmentSettingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    capture: bool = Field(description="Store request/response traces of all this environment's traffic.")


class EnvironmentSettingsOut(EnvironmentOut):
    capture: bool = Field(description="Whether traces of all this environment's traffic are stored.")

    @classmethod
    def from_row(cls, row: EnvironmentRow, numbers: dict[str, int] | None = None) -> "EnvironmentSettingsOut":
        return cls(**EnvironmentOut.from_row(row, numbers).model_dump(), capture=row.capture)


def router(plane: ControlPlane) -> APIRouter:
    api = APIRouter(prefix="/api/v1/models", tags=["models"])
    admin = Depends(Caller(plane))

    def deployment_numbers(model_id: str) -> dict[str, int]:
        """deployment id -> number, so environments can name their canary by number too."""
        return {d.id: d.number for d in plane.store.deployments.list_for_model(model_id)}

    @api.get("", response_model=ListOf[ModelSummary], summary="The workspace's models")
    def list_models(caller: Principal = admin):
        return ListOf[ModelSummary](data=[ModelSummary.from_row(m) for m in plane.store.models.list(caller.workspace_id)])

    @api.get("/{name}", response_model=ModelOut, summary="A model with its environments and deployments")
    def get_model(name: str, caller: Principal = admin) -> ModelOut:
        model = plane.get_model(caller.workspace_id, name)
        rows = plane.store.deployments.list_for_model(model.id)
        ready = plane.store.replicas.ready_counts([d.id for d in rows])
        deployments = [DeploymentOut.from_row(d, ready_replicas=ready.get(d.id, 0)) for d in rows]
        numbers = {d.id: d.number for d in rows}
        environments = [EnvironmentOut.from_row(e, numbers) for e in plane.store.environments.list(model.id)]
        return ModelOut(**ModelSummary.from_row(model).model_dump(), environments=environments,
                        deployments=deployments)

    @api.get("/{name}/environments", response_model=ListOf[EnvironmentOut], summary="A model's environments")
    def list_environments(name: str, caller: Principal = admin):
        model = plane.get_model(caller.workspace_id, name)
        numbers = deployment_numbers(model.id)
        return ListOf[EnvironmentOut](data=[EnvironmentOut.from_row(e, numbers)
                                            for e in plane.store.environments.list(model.id)])

    @api.post("/{name}/environments", status_code=201, response_model=EnvironmentOut,
              summary="Create a custom environment")
    def create_environment(name: str, body: EnvironmentCreateRequest, caller: Principal = admin) -> EnvironmentOut:
        return EnvironmentOut.from_row(plane.create_environment(caller.workspace_id, name, body.name))

    @api.patch("/{name}/environments/{environment}", response_model=EnvironmentSettingsOut,
               summary="Change an environment's settings (capture)")
    def update_environment(name: str, environment: str, body: EnvironmentSettingsRequest,
                           caller: Principal = admin) -> EnvironmentSettingsOut:
        row = plane.set_environment_capture(caller.workspace_id, name, environment, body.capture)
        return EnvironmentSettingsOut.from_row(row, deployment_numbers(row.model_id))

    @api.post("/{name}/environments/{environment}/promote", response_model=PromotionOut,
              summary="Point an environment at a deployment (it takes over once ready), or make it the canary")
    def promote(name: str, environment: str, body: PromoteRequest, caller: Principal = admin) -> PromotionOut:
        env, target = plane.promote(caller.workspace_id, name, environment, deployment_id=body.deployment_id,
                                    number=body.number, canary_percent=body.canary_percent)
        return PromotionOut.from_rows(name, env, target)

    @api.delete("/{name}/environments/{environment}/canary", response_model=EnvironmentOut,
                summary="End the environment's canary: all traffic back to its deployment")
    def end_canary(name: str, environment: str, caller: Principal = admin) -> EnvironmentOut:
        env, _ = plane.end_canary(caller.workspace_id, name, environment)
        return EnvironmentOut.from_row(env)

    @api.post("/{name}/environments/{environment}/rollback", response_model=PromotionOut,
              summary="Call off a pending promotion or canary, else re-promote the previous deployment")
    def rollback(name: str, environment: str, caller: Principal = admin) -> PromotionOut:
        env, target = plane.rollback(caller.workspace_id, name, environment)
        return PromotionOut.from_rows(name, env, target)

    return api
