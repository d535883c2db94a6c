"""The routing snapshot: everything a gateway needs to authenticate, resolve and route.

The control plane builds it from the store and bumps `version` on any change to keys, models,
environments, deployments or replicas. Gateways pull it (long poll with the last version they
have) and keep the last one, so a control-plane restart does not stop traffic.
"""

from __future__ import annotations

import asyncio
import threading

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
    capture: bool = Field(False, description="The package's `capture`: store traces of all its traffic.")
    replicas: list[ReplicaEntry] = Field(default_factory=list)
    workspace_id: str | None = Field(
        None, description="The workspace that owns the deployment; gateways answer 404 to keys of other "
                          "workspaces. None: inferred from the models whose environments point at it.")


class AdapterEntry(BaseModel):
    """What a fine-tuned model is: a LoRA adapter served on its base model's replicas."""

    base_model: str = Field(description="The base model's name, in the same workspace.")
    path: str = Field(description="The adapter's folder (PEFT format), readable by the base's replicas.")


class CanaryEntry(BaseModel):
    """A deployment that gets `percent` percent of an environment's requests while it has a ready replica."""

    deployment_id: str
    percent: int = Field(ge=1, le=99, description="Share of the environment's requests, in percent.")


class ModelEntry(BaseModel):
    workspace_id: str
    name: str
    adapter: AdapterEntry | None = Field(
        None, description="Set for a fine-tuned model: requests go to the base model's deployment with this "
                          "adapter applied, unless the model has deployments of its own.")
    environments: dict[str, str] = Field(default_factory=dict, description="Environment name -> deployment id.")
    canaries: dict[str, CanaryEntry] = Field(
        default_factory=dict, description="Environment name -> its canary; the environment's deployment serves the "
                                          "rest of its requests.")
    capture_environments: list[str] = Field(
        default_factory=list, description="Environments whose traffic the gateway stores as traces, whatever "
                                          "their deployment's `capture` says.")


class RoutingSnapshot(BaseModel):
    version: int = 0
    keys: list[KeyEntry] = Field(default_factory=list)
    models: list[ModelEntry] = Field(default_factory=list)
    deployments: list[DeploymentEntry] = Field(default_factory=list)


class SnapshotBoard:
    """The newest snapshot in memory, and readers waiting for a newer one (no I/O).

    Thread-safe: `publish` may run in worker threads while readers wait on event loops. This is
    the gateway's `SnapshotSource` contract in process: the control plane publishes into one,
    and tests and benchmarks hold a fixed one.
    """

    def __init__(self, initial: RoutingSnapshot | None = None) -> None:
        self._lock = threading.Lock()
        self._current = initial or RoutingSnapshot()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[RoutingSnapshot]]] = []

    def current(self) -> RoutingSnapshot:
        return self._current

    def publish(self, snapshot: RoutingSnapshot, *, only_newer: bool = True) -> bool:
        """Make `snapshot` current (if newer, unless `only_newer` is False) and wake every waiter."""
        with self._lock:
            if only_newer and snapshot.version <= self._current.version:
                return False
            self._current = snapshot
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, future, snapshot)
            except RuntimeError:  # that loop is closed; nobody is waiting there any more
                pass
        return True

    async def wait_newer(self, after_version: int, timeout: float) -> RoutingSnapshot:
        """A snapshot newer than `after_version`: at once if there is one, else the current one after `timeout`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RoutingSnapshot] = loop.create_future()
        with self._lock:
            if self._current.version > after_version:
                return self._current
            self._waiters.append((loop, future))
        try:
            return await asyncio.wait_for(future, timeout=max(0.0, timeout))
        except asyncio.TimeoutError:
            return self._current
        finally:
            with self._lock:
                self._waiters = [(lp, f) for lp, f in self._waiters if f is not future]


def _resolve(future: asyncio.Future[RoutingSnapshot], snapshot: RoutingSnapshot) -> None:
    if not future.done():
        future.set_result(snapshot)
