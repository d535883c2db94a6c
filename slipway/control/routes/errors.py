"""A deployment's recent errors: failed requests and failed or crashed replicas, newest first.

    GET /api/v1/deployments/{id}/errors?limit=20

Two sources, merged by time:

- requests: usage rows of the deployment with status >= 500 (the server's fault, not the
  caller's); the message is the captured trace's error message when the request was traced,
  else the status and route in words ("502 Bad Gateway on chat.completions after 30012 ms").
- replicas: replica rows in state `failed` (load() raised: the message is the last line of the
  traceback in the deployment's failure detail) or `crashed` (the exit, e.g. "killed by SIGKILL").

The routes are relative: the deployments router includes them under /api/v1/deployments.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, Depends, Query

from slipway.control.auth import Principal
from slipway.control.plane import ControlPlane
from slipway.control.routes.common import Caller
from slipway.control.schemas import DeploymentErrorOut, ListOf
from slipway.spec.replica import ReplicaState
from slipway.store import DeploymentRow, ReplicaRow
from slipway.store.repositories.usage import FailedRequest

SERVER_ERROR = 500
DEFAULT_LIMIT = 20
MAX_LIMIT = 200
MESSAGE_LIMIT = 500
ERROR_STATES = (ReplicaState.FAILED.value, ReplicaState.CRASHED.value)


def request_error(failed: FailedRequest) -> DeploymentErrorOut:
    return DeploymentErrorOut(at=failed.created_at, source="request", status=str(failed.status_code),
                              request_id=failed.request_id, replica_id=None, message=_request_message(failed))


def replica_error(replica: ReplicaRow, deployment: DeploymentRow) -> DeploymentErrorOut:
    if replica.state == ReplicaState.FAILED.value:
        reason = failure_reason(deployment.status_detail) if deployment.status == "failed" else ""
        message = f"load() raised: {reason}" if reason else replica.detail or "load() raised"
    else:
        message = replica.detail or "the replica process exited"
    if replica.exit_code is not None and f"code {replica.exit_code}" not in message:
        message += f" (exit code {replica.exit_code})"
    return DeploymentErrorOut(at=replica.updated_at, source="replica", status=replica.state, request_id=None,
                              replica_id=replica.id, message=message[:MESSAGE_LIMIT])


def _request_message(failed: FailedRequest) -> str:
    traced = _traced_message(failed.response)
    if traced:
        return traced[:MESSAGE_LIMIT]
    try:
        phrase = f"{failed.status_code} {HTTPStatus(failed.status_code).phrase}"
    except ValueError:
        phrase = f"status {failed.status_code}"
    return f"{phrase} on {failed.route} after {failed.latency_ms:.0f} ms"


def _traced_message(response: Any) -> str:
    """The OpenAI-shaped error message of a captured response, if it holds one."""
    error = response.get("error") if isinstance(response, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return message.strip() if isinstance(message, str) else ""


def failure_reason(detail: str) -> str:
    """The line of a failed load's detail that says what went wrong: the traceback's last line.

    The detail is the replica's log tail: the traceback (plain text) among JSON log lines, code
    lines ("File ...") and carets, so the last line that is none of those and has a colon wins.
    """
    lines = [line.strip() for line in (detail or "").splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith(("File ", "^", "~", "{", "replica ")) and ":" in line]
    return said[-1] if said else ""


def router(plane: ControlPlane) -> APIRouter:
    api = APIRouter(tags=["deployments"])
    admin = Depends(Caller(plane))

    @api.get("/{deployment_id}/errors", response_model=ListOf[DeploymentErrorOut],
             summary="Recent failed requests (status >= 500) and failed or crashed replicas, newest first")
    def recent_errors(deployment_id: str, caller: Principal = admin,
                      limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Most errors listed.")):
        deployment = plane.get_deployment(caller.workspace_id, deployment_id)
        requests = plane.store.usage.recent_errors(caller.workspace_id, deployment.id, min_status=SERVER_ERROR,
                                                   limit=limit)
        replicas = [r for r in plane.store.replicas.list(deployment.id, include_stopped=True)
                    if r.state in ERROR_STATES]
        errors = [request_error(r) for r in requests] + [replica_error(r, deployment) for r in replicas]
        errors.sort(key=lambda e: e.at, reverse=True)
        return ListOf[DeploymentErrorOut](data=errors[:limit])

    return api
