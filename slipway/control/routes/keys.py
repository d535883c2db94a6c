"""API keys (create: the secret is returned once; list; revoke) and workspaces."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from slipway.control.auth import Principal
from slipway.control.keys import CreatedKey
from slipway.control.plane import ControlPlane
from slipway.control.routes.common import Caller
from slipway.control.schemas import (
    KeyCreatedOut,
    KeyCreateRequest,
    KeyOut,
    ListOf,
    WorkspaceCreateRequest,
    WorkspaceOut,
)


def _created(created: CreatedKey) -> KeyCreatedOut:
    return KeyCreatedOut(**KeyOut.from_row(created.row).model_dump(), key=created.secret)


def router(plane: ControlPlane) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["keys"])
    admin = Depends(Caller(plane))

    @api.post("/keys", status_code=201, response_model=KeyCreatedOut,
              summary="Create an API key; the response is the only time its secret is shown")
    def create_key(body: KeyCreateRequest, caller: Principal = admin) -> KeyCreatedOut:
        return _created(plane.create_key(caller.workspace_id, name=body.name, scopes=body.scopes, models=body.models))

    @api.get("/keys", response_model=ListOf[KeyOut], summary="The workspace's keys (never their secrets)")
    def list_keys(caller: Principal = admin):
        return ListOf[KeyOut](data=[KeyOut.from_row(k) for k in plane.store.keys.list(caller.workspace_id)])

    @api.delete("/keys/{key_id}", response_model=KeyOut, summary="Revoke a key; it stops working at once")
    def revoke_key(key_id: str, caller: Principal = admin) -> KeyOut:
        return KeyOut.from_row(plane.revoke_key(caller.workspace_id, key_id))

    @api.post("/workspaces", status_code=201, response_model=WorkspaceOut, tags=["workspaces"],
              summary="Create a workspace; the response carries its first admin key")
    def create_workspace(body: WorkspaceCreateRequest, caller: Principal = admin) -> WorkspaceOut:
        workspace, key = plane.create_workspace(body.name)
        return WorkspaceOut.from_row(workspace, admin_key=_created(key))

    return api
