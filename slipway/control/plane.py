"""The control plane: desired state in the store, a loop that makes the replicas match it.

    ControlPlane
      store       desired state (deployments, environments, keys) and what was observed (replicas)
      reconciler  starts/stops replicas through the backend so they match the desired counts
      snapshots   the routing snapshot gateways read (SnapshotPublisher)
      autoscaler  optional: sets desired replica counts from the gateways' load (control.autoscaler)
      sampler     metric history per deployment for the charts (control.sampler -> observe.history)
      metrics     the control plane's Prometheus families (observe.metrics.ControlMetrics)

Each tick: the autoscaler's step (when there is one: new desired counts) -> running deployments
-> `DesiredDeployment`s -> `reconciler.tick` -> replica rows, deployment status (failed with the
reason, or active once a replica is ready), waiting promotions finished -> state version bumped
and a new snapshot published if anything changed -> one metric sample per running deployment
(no network wait: replicas' /metrics are read in the background). A tick that raises is logged
and the loop goes on; every tick's duration is observed.

The management operations (deploy, promote, scale, keys, ...) are synchronous: they run in
worker threads, change the store in one transaction, then publish a snapshot and wake the loop.
`wake()` asks for a tick now from any thread, e.g. when a gateway starts holding a request for a
deployment scaled to zero.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slipway.backends.base import Backend
from slipway.control import promotion, scaling
from slipway.control.autoscaler import Autoscaler
from slipway.control.auth import KeyAuthenticator, Principal
from slipway.control.config import ControlConfig
from slipway.control.deploy import DeployResult, deploy, target_environment
from slipway.control.fleet_metrics import read_fleet
from slipway.control.keys import CreatedKey, bootstrap, create_key, create_workspace
from slipway.control.reconciler import DesiredDeployment, ReconcileReport, Reconciler
from slipway.control.sampler import Load, MetricSampler
from slipway.control.snapshot import SnapshotPublisher, build_snapshot
from slipway.errors import ConflictError, NotFoundError, SpecError
from slipway.observe.history import MetricHistory
from slipway.observe.metrics import ControlMetrics
from slipway.spec.package import PackageSpec, parse_memory
from slipway.spec.replica import ReplicaObservation, ReplicaState
from slipway.spec.snapshot import RoutingSnapshot
from slipway.store import DeploymentRow, EnvironmentRow, KeyRow, ModelRow, ReplicaRow, Store, WorkspaceRow

log = logging.getLogger(__name__)

# Traces older than this many days are deleted (SLIPWAY_TRACE_RETENTION_DAYS), once an hour.
TRACE_RETENTION_ENV = "SLIPWAY_TRACE_RETENTION_DAYS"
DEFAULT_TRACE_RETENTION_DAYS = 30.0
TRACE_PRUNE_INTERVAL = 3600.0


def trace_retention_from_env(environ: Mapping[str, str] = os.environ) -> float:
    """Days traces are kept, from SLIPWAY_TRACE_RETENTION_DAYS (default 30)."""
    raw = environ.get(TRACE_RETENTION_ENV, "").strip()
    if not raw:
        return DEFAULT_TRACE_RETENTION_DAYS
    try:
        days = float(raw)
    except ValueError:
        days = -1.0
    if not days > 0:
        raise SpecError(f"{TRACE_RETENTION_ENV}={raw!r} is not a positive number of days; set it to e.g. 30, "
                        "or unset it for the default of 30", code="invalid_config")
    return days


class ControlPlane:
    """Owns the store, the backend, the reconciler and the snapshot publisher of one slipway."""

    def __init__(self, store: Store, backend: Backend, *, home: Path, config: ControlConfig | None = None,
                 reconciler: Reconciler | None = None, autoscaler: Autoscaler | None = None,
                 sampler: MetricSampler | None = None, trace_retention_days: float | None = None) -> None:
        self.store = store
        self.backend = backend
        self.reconciler = reconciler or Reconciler(backend)
        # None: replica counts change only by hand (scale, autoscaling settings). May be set after
        # construction, before the loop runs, when its load source needs objects built later.
        self.autoscaler = autoscaler
        self.home = Path(home)
        self.config = config or ControlConfig()
        self.snapshots = SnapshotPublisher()
        self.metrics = ControlMetrics()
        self.sampler = sampler or MetricSampler()
        self.sampler.metrics = self.sampler.metrics or self.metrics
        self.authenticator = KeyAuthenticator(store, ttl_seconds=self.config.key_cache_seconds,
                                              max_entries=self.config.key_cache_entries)
        # The bootstrap workspace; its admins may read every workspace's routing snapshot.
        self.system_workspace_id: str | None = None
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._last_error: str | None = None
        # Set when publishing after a change failed; the next tick publishes again.
        self._publish_due = False
        # The reconciler's last observation, for the replica gauges of /metrics.
        self._observed: list[ReplicaObservation] = []
        self._sampling_failed = False
        self.trace_retention_days = trace_retention_days or trace_retention_from_env()
        self._traces_pruned_at: float | None = None

    @property
    def history(self) -> MetricHistory:
        """Each deployment's recent metrics (GET /api/v1/deployments/{id}/metrics reads it)."""
        return self.sampler.history

    # Lifecycle ---------------------------------------------------------------------------
    def bootstrap(self) -> tuple[WorkspaceRow, str | None]:
        """The default workspace and admin key (saved to home/admin.key); the secret only when new."""
        workspace, secret = bootstrap(self.store, self.home, time.time())
        self.system_workspace_id = workspace.id
        self._changed()
        return workspace, secret

    async def start(self) -> None:
        """Adopt the replicas the backend already runs and publish the first snapshot."""
        self._bind_loop()
        await self.reconciler.start()
        await asyncio.to_thread(self.publish)
        self._started = True

    async def run_forever(self, interval: float | None = None) -> None:
        """Tick every `interval` seconds (or sooner when a change wakes it) until cancelled."""
        interval = interval or self.config.tick_interval
        self._bind_loop()
        assert self._wake is not None
        while True:
            try:
                if not self._started:
                    await self.start()
                await self.tick(time.time())
                self._last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.tick_failed()
                message = f"{type(exc).__name__}: {exc}"
                if message != self._last_error:
                    log.exception("control loop tick failed; retrying every %.1fs", interval)
                else:
                    log.warning("control loop tick failed again: %s", message)
                self._last_error = message
            # A starting replica is polled often: requests may be held until it turns ready.
            starting = any(r.state == ReplicaState.STARTING for r in self._observed)
            wait = min(interval, self.config.starting_tick_interval) if starting else interval
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    def wake(self) -> None:
        """Run the next tick now instead of at the end of the interval; safe from any thread, a no-op
        before the loop runs."""
        if self._loop is not None and self._wake is not None:
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop has closed
                pass

    async def tick(self, now: float) -> bool:
        """One pass of the loop; True if anything a gateway sees changed."""
        started = time.perf_counter()
        try:
            if self.autoscaler is not None:
                await self.autoscaler.tick(self.store, now)  # never raises; its new counts are reconciled below
            running = await asyncio.to_thread(self.store.deployments.list_running)
            report = await self.reconciler.tick([self._desired(d) for d in running], now)
            self._observed = report.replicas
            changed = await asyncio.to_thread(self._record, report, now)
            if changed or self._publish_due:
                self._publish_due = False
                await asyncio.to_thread(self.publish)
            self._sample(running, report, now)
            await asyncio.to_thread(self.prune_traces, now)
            return changed
        finally:
            self.metrics.observe_tick(time.perf_counter() - started)

    async def shutdown(self, *, stop_replicas: bool) -> None:
        """Stop the reconciler (and with `stop_replicas`, every replica), then close the backend."""
        try:
            await self.sampler.aclose()
            await self.reconciler.shutdown(stop_replicas=stop_replicas)
            if stop_replicas:
                await asyncio.to_thread(self._record_all_stopped, time.time())
        finally:
            await self.backend.close()

    def publish(self) -> RoutingSnapshot:
        """Build the snapshot from the store and publish it (older versions are ignored)."""
        snapshot = build_snapshot(self.store)
        self.snapshots.publish(snapshot)
        return self.snapshots.current()

    def authenticate(self, secret: str) -> Principal:
        return self.authenticator.authenticate(secret)

    def render_metrics(self) -> bytes:
        """The control plane's Prometheus page; synchronous (reads the store), so call it from a worker thread."""
        by_status, running = read_fleet(self.store, self._observed, self._autoscaled_desired)
        self.metrics.set_fleet(by_status, running)
        return self.metrics.render()

    # Reads -------------------------------------------------------------------------------
    def get_model(self, workspace_id: str, name: str) -> ModelRow:
        model = self.store.models.get(workspace_id, name)
        if model is None:
            raise NotFoundError(f"model {name!r} not found; `slipway ls` lists your models")
        return model

    def get_deployment(self, workspace_id: str, deployment_id: str) -> DeploymentRow:
        deployment = self.store.deployments.get(deployment_id, workspace_id=workspace_id)
        if deployment is None:
            raise NotFoundError(f"deployment {deployment_id!r} not found; `slipway ls` lists your deployments")
        return deployment

    async def logs(self, workspace_id: str, deployment_id: str, *, tail: int) -> list[tuple[ReplicaRow, str]]:
        """Each replica's last `tail` log lines, most recently started first (failed and stopped ones too)."""
        deployment = await asyncio.to_thread(self.get_deployment, workspace_id, deployment_id)
        replicas = await asyncio.to_thread(self.store.replicas.list, deployment.id, include_stopped=True)
        results = []
        for replica in replicas:
            try:
                text = await self.backend.logs(replica.id, tail=tail)
            except Exception as exc:  # one unreadable log must not hide the others
                text = f"(logs unavailable: {type(exc).__name__}: {exc})"
            results.append((replica, text))
        return results

    # Operations (synchronous: call from a worker thread) -----------------------------------
    def deploy(self, workspace_id: str, package: bytes, *, environment: str | None = None,
               promote: bool = False) -> DeployResult:
        result = deploy(self.store, self.home, workspace_id, package, environment=environment, promote=promote,
                        now=time.time(), limits=self.config.packages)
        log.info("deployed %s #%d as %s into %s", result.deployment.model_name, result.deployment.number,
                 result.deployment.id, result.environment.name)
        self._changed()
        return result

    def deactivate(self, workspace_id: str, deployment_id: str) -> DeploymentRow:
        return self._change_deployment(workspace_id, deployment_id,
                                       lambda tx, d, now: scaling.deactivate(tx, d, now))

    def scale(self, workspace_id: str, deployment_id: str, replicas: int) -> DeploymentRow:
        return self._change_deployment(workspace_id, deployment_id, lambda tx, d, now: scaling.scale(
            tx, d, replicas, now, max_replicas=self.config.max_replicas))

    def set_autoscaling(self, workspace_id: str, deployment_id: str, changes: dict[str, Any]) -> DeploymentRow:
        return self._change_deployment(workspace_id, deployment_id,
                                       lambda tx, d, now: scaling.set_autoscaling(tx, d, changes, now))

    def create_environment(self, workspace_id: str, model_name: str, name: str) -> EnvironmentRow:
        target_environment(name, False)  # validates the name
        with self.store.transaction() as tx:
            model = self._model_in(tx, workspace_id, model_name)
            if tx.environments.get(model.id, name) is not None:
                raise ConflictError(f"model {model_name!r} already has an environment {name!r}")
            environment = tx.environments.ensure(model.id, name, time.time())
            tx.state.bump()
        self._changed()
        return environment

    def set_environment_capture(self, workspace_id: str, model_name: str, name: str, capture: bool) -> EnvironmentRow:
        """Store traces of all the environment's traffic (True) or only of capturing deployments (False)."""
        with self.store.transaction() as tx:
            model = self._model_in(tx, workspace_id, model_name)
            environment = tx.environments.get(model.id, name)
            if environment is None:
                raise NotFoundError(f"model {model_name!r} has no environment {name!r}; see "
                                    f"GET /api/v1/models/{model_name}/environments")
            environment = tx.environments.set_capture(environment.id, capture, time.time())
            tx.state.bump()
        self._changed()
        return environment

    def promote(self, workspace_id: str, model_name: str, environment: str, *, deployment_id: str | None = None,
                number: int | None = None, canary_percent: int | None = None) -> tuple[EnvironmentRow, DeploymentRow]:
        """Point the environment at a deployment (by id or number); it takes over once ready.

        With `canary_percent` the deployment becomes the environment's canary at that share of
        its requests instead; without it, promoting the canary completes it (see `promotion`).
        """
        if (deployment_id is None) == (number is None):
            raise SpecError("give either deployment_id or number of the deployment to promote",
                            code="invalid_request")
        now = time.time()
        with self.store.transaction() as tx:
            model = self._model_in(tx, workspace_id, model_name)
            target = (tx.deployments.get(deployment_id, workspace_id=workspace_id) if deployment_id
                      else tx.deployments.get_by_number(model.id, number))
            if target is None or target.model_id != model.id:
                which = deployment_id or f"#{number}"
                raise NotFoundError(f"model {model_name!r} has no deployment {which}; see GET /api/v1/models/{model_name}")
            if canary_percent is None:
                result = promotion.promote(tx, model, environment, target, now)
            else:
                result = promotion.start_canary(tx, model, environment, target, canary_percent, now)
            target = tx.deployments.get(target.id)
            tx.state.bump()
        if canary_percent is not None:
            log.info("%s %s sends %d%% of its requests to canary %s", model_name, environment, canary_percent,
                     target.id)
        self._changed()
        return result, target

    def end_canary(self, workspace_id: str, model_name: str, environment: str) -> tuple[EnvironmentRow, DeploymentRow]:
        """Send all the environment's traffic back to its deployment; returns it and the ended canary."""
        with self.store.transaction() as tx:
            model = self._model_in(tx, workspace_id, model_name)
            result, canary_id = promotion.end_canary(tx, model, environment, time.time())
            canary = tx.deployments.get(canary_id)
            tx.state.bump()
        self._changed()
        return result, canary

    def rollback(self, workspace_id: str, model_name: str, environment: str) -> tuple[EnvironmentRow, DeploymentRow]:
        """Call off a waiting promotion or a canary, else re-promote the environment's previous deployment."""
        with self.store.transaction() as tx:
            model = self._model_in(tx, workspace_id, model_name)
            result, target_id = promotion.rollback(tx, model, environment, time.time())
            target = tx.deployments.get(target_id)
            tx.state.bump()
        self._changed()
        return result, target

    def create_key(self, workspace_id: str, *, name: str, scopes: list[str], models: list[str] | None) -> CreatedKey:
        created = create_key(self.store, workspace_id, name=name, scopes=scopes, models=models, now=time.time())
        self._changed()
        return created

    def revoke_key(self, workspace_id: str, key_id: str) -> KeyRow:
        with self.store.transaction() as tx:
            row = tx.keys.revoke(workspace_id, key_id, time.time())
            if row is None:
                raise NotFoundError(f"key {key_id!r} not found; `slipway keys ls` lists your keys")
            tx.state.bump()
        self.authenticator.forget(key_id)
        self._changed()
        return row

    def create_workspace(self, name: str) -> tuple[WorkspaceRow, CreatedKey]:
        result = create_workspace(self.store, name, time.time())
        self._changed()
        return result

    def prune_traces(self, now: float) -> int | None:
        """Delete traces older than the retention, at most once per TRACE_PRUNE_INTERVAL; how many, or
        None when it was not due. A failure is logged and retried on the next tick."""
        if self._traces_pruned_at is not None and now - self._traces_pruned_at < TRACE_PRUNE_INTERVAL:
            return None
        try:
            deleted = self.store.traces.delete_older_than(now - self.trace_retention_days * 86400.0)
        except Exception:
            log.exception("deleting traces older than %g days failed; retrying on the next tick",
                          self.trace_retention_days)
            return None
        self._traces_pruned_at = now
        if deleted:
            log.info("deleted %d traces older than %g days", deleted, self.trace_retention_days)
        return deleted

    # Internals ---------------------------------------------------------------------------
    def _desired(self, deployment: DeploymentRow) -> DesiredDeployment:
        spec = PackageSpec.model_validate(deployment.spec)
        return DesiredDeployment(
            deployment_id=deployment.id, replicas=deployment.desired_replicas, package_dir=deployment.package_dir,
            env=dict(spec.runtime.env), cpu=spec.resources.cpu, memory_bytes=parse_memory(spec.resources.memory),
        )

    def _record(self, report: ReconcileReport, now: float) -> bool:
        """Write one reconcile report: replica rows, failed/active status, finished promotions.

        Two steps, in this order: the replica rows are committed and published to the gateways
        first; only then may a deployment turn active or an environment switch to it. Whoever
        reads "active" (a CLI waiting for Ready, then calling the model) thus finds a gateway
        that already knows the ready replica.
        """
        ready = {r.deployment_id for r in report.replicas if r.state == ReplicaState.READY}
        with self.store.transaction() as tx:
            replicas_changed = tx.replicas.sync(report.replicas, now)
            changed = replicas_changed
            for deployment_id, reason in report.failed.items():
                deployment = tx.deployments.get(deployment_id)
                if deployment is not None and deployment.status in ("deploying", "active"):
                    log.warning("deployment %s failed to load; it will not be restarted", deployment_id)
                    tx.deployments.update(deployment_id, now, status="failed", status_detail=reason,
                                          desired_replicas=0)
                    changed = True
            if changed:
                tx.state.bump()
        if replicas_changed:
            self.publish()
        with self.store.transaction() as tx:
            activated = False
            for deployment in tx.deployments.list(statuses=("deploying",)):
                if deployment.id in ready and deployment.id not in report.failed:
                    tx.deployments.update(deployment.id, now, status="active", status_detail="")
                    activated = True
            activated = promotion.resolve_pending(tx, now) or activated
            if activated:
                tx.state.bump()
        return changed or activated

    def _sample(self, running: list[DeploymentRow], report: ReconcileReport, now: float) -> None:
        """One metric sample per running deployment; a failure here must not fail the tick."""
        try:
            self.sampler.sample(running, report.replicas, self._gateway_load(running, now), now)
        except Exception:
            if not self._sampling_failed:
                log.exception("sampling deployment metrics failed; the charts miss this tick")
            self._sampling_failed = True
        else:
            self._sampling_failed = False

    def _gateway_load(self, running: list[DeploymentRow], now: float) -> Load | None:
        """In flight and queued per deployment as the autoscaler pulled them this tick (None without one)."""
        if self.autoscaler is None:
            return None
        load = {}
        for deployment in running:
            latest = self.autoscaler.window.latest(deployment.id)
            if latest is not None and latest.at == now:
                load[deployment.id] = (latest.in_flight, latest.queued)
        return load

    def _autoscaled_desired(self, deployment_id: str, desired: int) -> int | None:
        if self.autoscaler is None or self.autoscaler.state_of(deployment_id) is None:
            return None
        return desired

    def _record_all_stopped(self, now: float) -> None:
        """After stopping every replica: no row may still look live to the next start's first snapshot."""
        with self.store.transaction() as tx:
            if tx.replicas.sync([], now):
                tx.state.bump()

    def _change_deployment(self, workspace_id: str, deployment_id: str, change) -> DeploymentRow:
        with self.store.transaction() as tx:
            deployment = tx.deployments.get(deployment_id, workspace_id=workspace_id)
            if deployment is None:
                raise NotFoundError(f"deployment {deployment_id!r} not found; `slipway ls` lists your deployments")
            updated = change(tx, deployment, time.time())
            tx.state.bump()
        self._changed()
        return updated

    @staticmethod
    def _model_in(tx, workspace_id: str, name: str) -> ModelRow:
        model = tx.models.get(workspace_id, name)
        if model is None:
            raise NotFoundError(f"model {name!r} not found; `slipway ls` lists your models")
        return model

    def _changed(self) -> None:
        """After a management change: publish the new snapshot and wake the loop to act on it."""
        try:
            self.publish()
        except Exception:  # the change is committed; the next tick publishes it
            log.exception("publishing the routing snapshot failed; retrying on the next tick")
            self._publish_due = True
        self.wake()

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._wake = asyncio.Event()
