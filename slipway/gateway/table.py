"""The route table: one routing snapshot indexed for the hot path, rebuilt when a new one arrives.

    table = RouteTable.build(snapshot, previous=old_table)
    key = table.keys_by_hash.get(sha256_hex)                    # authentication
    target = table.resolve_model(workspace_id, "name@env")      # a deployment, or NotFoundError
    target = table.resolve_deployment(workspace_id, "d-…")

An environment with a canary sends the canary's percent of its requests to the canary deployment,
picked per request with the table's random source, while that deployment has a ready replica;
otherwise every request goes to the environment's deployment, so a canary never holds a request
for a cold start nor fails one. The `Target` keeps the environment's name: its deployment tells
usage and metrics which of the two served.

A fine-tuned model (`base:ft-…`, an adapter registered by a fine-tuning job) with no deployment of
its own resolves to its base model's deployment in the same environment, and its `Target` carries
the adapter: the proxy tells the replica which adapter to apply (by name and folder), so every
replica of the base serves exactly the adapters the control plane has registered. It follows the
base environment's canary split like any request for the base.

Visibility is by workspace: a model or deployment of another workspace is reported exactly like
one that does not exist, so a key learns nothing about names it may not use.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from slipway.errors import NotFoundError
from slipway.routing import RoutingPolicy, get_policy
from slipway.spec.snapshot import (
    AdapterEntry, CanaryEntry, DeploymentEntry, KeyEntry, ModelEntry, ReplicaEntry, RoutingSnapshot,
)

log = logging.getLogger(__name__)

PRODUCTION = "production"
DEVELOPMENT = "development"
FALLBACK_POLICY = "least_load"


@dataclass(slots=True)
class DeploymentRoute:
    """A deployment as the gateway routes to it: its replicas and its policy instance."""

    entry: DeploymentEntry
    workspace_id: str | None
    replicas: list[ReplicaEntry]
    policy: RoutingPolicy
    policy_name: str
    has_ready: bool
    """Whether any replica is ready; without one, requests are held for a cold start."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where one request goes."""

    route: DeploymentRoute
    model_name: str
    environment: str | None
    capture: bool = False
    """Store a trace of this request: its deployment or its environment captures."""
    adapter: AdapterEntry | None = None
    """The LoRA adapter the replica applies (a fine-tuned model served on its base's replicas)."""


class RouteTable:
    def __init__(self, snapshot: RoutingSnapshot, keys_by_hash: dict[str, KeyEntry],
                 models: dict[tuple[str, str], ModelEntry], deployments: dict[str, DeploymentRoute],
                 random_source: Callable[[], float] = random.random) -> None:
        self.snapshot = snapshot
        self.version = snapshot.version
        self.keys_by_hash = keys_by_hash
        self.models = models
        self.deployments = deployments
        # A uniform draw in [0, 1) per request to an environment with a ready canary.
        self.random_source = random_source

    @classmethod
    def build(cls, snapshot: RoutingSnapshot, previous: RouteTable | None = None,
              random_source: Callable[[], float] | None = None) -> RouteTable:
        """Index `snapshot`; `random_source` defaults to the previous table's, else `random.random`."""
        keys = {k.key_hash: k for k in snapshot.keys}
        models = {(m.workspace_id, m.name): m for m in snapshot.models}
        owners = _deployment_owners(snapshot)
        routes: dict[str, DeploymentRoute] = {}
        for entry in snapshot.deployments:
            kept = previous.deployments.get(entry.deployment_id) if previous else None
            if kept is not None and kept.policy_name == entry.routing:
                policy = kept.policy  # keeps its rotation (and later its prefix index) across snapshots
            else:
                policy = _policy_for(entry)
            routes[entry.deployment_id] = DeploymentRoute(
                entry=entry, workspace_id=owners.get(entry.deployment_id), replicas=list(entry.replicas),
                policy=policy, policy_name=entry.routing, has_ready=any(r.ready for r in entry.replicas))
        if random_source is None:
            random_source = previous.random_source if previous is not None else random.random
        return cls(snapshot, keys, models, routes, random_source)

    def replica_urls(self) -> set[str]:
        return {r.url for route in self.deployments.values() for r in route.replicas}

    def resolve_model(self, workspace_id: str, requested: str, environment: str | None = None) -> Target:
        """The deployment serving `requested` ('name' or 'name@env') in the caller's workspace."""
        name, _, suffix = requested.partition("@")
        if suffix and environment is None:
            environment = suffix
        model = self.models.get((workspace_id, name))
        if model is None:
            raise NotFoundError(f"model {name!r} does not exist; list the models this key can call with "
                                "GET /v1/models")
        if model.adapter is not None and not any(model.environments.values()):
            return self._resolve_adapter(workspace_id, model, model.adapter, environment)
        if environment is None:
            environment = PRODUCTION if model.environments.get(PRODUCTION) else DEVELOPMENT
        deployment_id = model.environments.get(environment)
        if not deployment_id:
            served = sorted(env for env, dep in model.environments.items() if dep)
            hint = (f"it serves: {', '.join(served)}" if served
                    else "it has no deployment yet; deploy one with `slipway deploy`")
            raise NotFoundError(f"model {name!r} has no deployment in environment {environment!r}; {hint}")
        route = self.deployments.get(deployment_id)
        if route is None:
            raise NotFoundError(f"environment {environment!r} of model {name!r} points at deployment "
                                f"{deployment_id}, which is not running; deploy or promote another")
        canary = model.canaries.get(environment)
        if canary is not None:
            route = self._split(route, canary, workspace_id)
        capture = route.entry.capture or environment in model.capture_environments
        return Target(route, name, environment, capture)

    def _split(self, serving: DeploymentRoute, canary: CanaryEntry, workspace_id: str) -> DeploymentRoute:
        """The canary's route for its percent of requests while it has a ready replica, else `serving`."""
        route = self.deployments.get(canary.deployment_id)
        if route is None or not route.has_ready or route.workspace_id != workspace_id:
            return serving
        return route if self.random_source() * 100.0 < canary.percent else serving

    def _resolve_adapter(self, workspace_id: str, model: ModelEntry, adapter: AdapterEntry,
                         environment: str | None) -> Target:
        base = self.models.get((workspace_id, adapter.base_model))
        if base is None:
            raise NotFoundError(f"model {model.name!r} is an adapter of {adapter.base_model!r}, which does not exist "
                                "any more; deploy the base model again to serve it")
        try:
            target = self.resolve_model(workspace_id, base.name, environment)
        except NotFoundError as exc:
            raise NotFoundError(f"model {model.name!r} is served on its base model's replicas: {exc.message}") from None
        if target.route.entry.kind != "llm":
            raise NotFoundError(f"model {model.name!r} is a LoRA adapter, but its base {base.name!r} is served by a "
                                f"{target.route.entry.kind!r} deployment; adapters need an llm deployment")
        return Target(target.route, model.name, target.environment, target.capture, adapter)

    def resolve_deployment(self, workspace_id: str, deployment_id: str) -> Target:
        route = self.deployments.get(deployment_id)
        if route is None or route.workspace_id != workspace_id:
            raise NotFoundError(f"deployment {deployment_id!r} does not exist or is not running; list deployments "
                                "with GET /api/v1/models/{name}")
        return Target(route, route.entry.model_name, None, route.entry.capture)

    def model_ids(self, workspace_id: str, allowed: list[str] | None) -> list[str]:
        """The `model` values this workspace can call: 'name', plus 'name@env' for other environments."""
        ids: list[str] = []
        for (owner, name), model in sorted(self.models.items()):
            if owner != workspace_id or (allowed is not None and name not in allowed):
                continue
            served = [env for env, dep in model.environments.items() if dep]
            if not served and model.adapter is not None:  # served wherever its base is
                base = self.models.get((owner, model.adapter.base_model))
                served = [env for env, dep in base.environments.items() if dep] if base is not None else []
            if PRODUCTION in served or DEVELOPMENT in served:
                ids.append(name)
            ids += [f"{name}@{env}" for env in sorted(served) if env != PRODUCTION]
        return ids


def _policy_for(entry: DeploymentEntry) -> RoutingPolicy:
    try:
        return get_policy(entry.routing)
    except Exception:  # a policy named in the spec but not available here: route anyway
        log.warning("routing policy %r of deployment %s is not available; using %s",
                    entry.routing, entry.deployment_id, FALLBACK_POLICY)
        return get_policy(FALLBACK_POLICY)


def _deployment_owners(snapshot: RoutingSnapshot) -> dict[str, str]:
    """deployment id -> workspace id.

    Taken from the deployment entry when the control plane fills it in; otherwise from the models
    whose environments point at it, then from its model name when exactly one workspace has a
    model of that name. A deployment no rule places is visible to nobody.
    """
    owners: dict[str, str] = {}
    for model in snapshot.models:
        referenced = [*model.environments.values(), *(c.deployment_id for c in model.canaries.values())]
        for deployment_id in referenced:
            if deployment_id:
                owners.setdefault(deployment_id, model.workspace_id)
    workspaces_by_name: dict[str, set[str]] = {}
    for model in snapshot.models:
        workspaces_by_name.setdefault(model.name, set()).add(model.workspace_id)
    for entry in snapshot.deployments:
        if entry.workspace_id:
            owners[entry.deployment_id] = entry.workspace_id
        elif entry.deployment_id not in owners:
            candidates = workspaces_by_name.get(entry.model_name, set())
            if len(candidates) == 1:
                owners[entry.deployment_id] = next(iter(candidates))
    return owners
