"""The autoscaler: each control-loop tick, pull the load from the gateways and set each deployment's replica count.

    tick(store, now)
      load     = await source.load()              deployment_id -> (in_flight, queued), summed over gateways
      window  += LoadSample(now, in_flight, queued) for every running deployment the gateways report
      for each autoscaled deployment:
          decision, state = AutoscalingPolicy(its settings).decide(window samples, desired_replicas, state, now)
      write the changed desired_replicas in one transaction, each with a log line giving the reason
      -> [ScalingChange]                          the reconciler, later in the same tick, starts or stops replicas

What it decides for: deployments that are *active* (loaded once), whose autoscaling range is a
range (min_replica < max_replica), and that are not retiring, i.e. every environment they serve
has been promoted to another deployment that is still starting. It leaves alone deployments
that are failed or inactive (nothing runs), deploying (their first replica is still loading;
a load average of zero must not scale away a promotion in progress), retiring (they stop as
soon as their successor is ready) and of fixed size (min_replica == max_replica).

What it remembers: the `LoadWindow` of recent samples and each deployment's `AutoscalingState`,
both in memory, bounded in count and age, and dropped for deployments that stop running. A
restart forgets only how long load has been low, which delays a scale-down and never causes one.
A deployment no gateway reports gets no sample, and the policy holds its count: missing data is
never read as low load.

An explicit replica count (`slipway scale --replicas N`, POST /scale) is fixed-size
autoscaling, as on Baseten where the replica range is the one scaling knob: it sets
min_replica = max_replica = N, so the count holds, survives restarts, and shows in the
deployment's autoscaling settings; changing those settings again (`slipway scale --min 1 --max 4`,
PATCH /autoscaling) hands the count back to the autoscaler on the next tick. `--replicas 0` puts
the deployment to sleep: min_replica 0 and no replicas now, and the first request queued for it
brings one back (to stop it for good, deactivate it).

Scale to zero and back: with min_replica 0 the policy reaches zero after autoscaling_window plus
scale_down_delay without a request; a gateway that holds a request for a deployment at zero
reports it as `queued`, and the next tick starts a replica at once. The gateway can call
`ControlPlane.wake()` when it starts holding one, so that tick comes now rather than on the
next interval.

The load sources: `InProcessLoadSource` wraps the in-process gateway's `load()` (`slipway up`);
`HttpLoadSource` pulls GET /internal/load from each gateway of a fleet and sums them, a gateway
that does not answer counting for nothing (logged when it goes quiet and when it is back).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slipway.autoscaling import (
    AutoscalingPolicy, AutoscalingState, LoadSample, LoadWindow, PolicyConfig, ScalingDecision,
)
from slipway.errors import SpecError
from slipway.spec.package import Autoscaling
from slipway.store import DeploymentRow, Store, Transaction

log = logging.getLogger(__name__)

Load = dict[str, tuple[float, float]]
"""deployment_id -> (requests in flight, requests queued for a replica), summed over every gateway."""


# -- where the load comes from ------------------------------------------------------------------

class LoadSource(Protocol):
    """The current load of every deployment the gateways know; a deployment left out has no reading."""

    async def load(self) -> Load: ...


def parse_load_report(report: Any) -> Load:
    """The load in one gateway's report, the body of GET /internal/load:

        {"snapshot_version": 7, "at": 1700000000.0,
         "deployments": {"dep-1a2b3c4d": {"in_flight": 3, "queued": 0}, ...}}

    An entry that is not a pair of finite counts >= 0 is skipped, so one odd entry hides nothing else.
    """
    deployments = report.get("deployments") if isinstance(report, Mapping) else None
    if not isinstance(deployments, Mapping):
        return {}
    load: Load = {}
    for deployment_id, entry in deployments.items():
        if not isinstance(entry, Mapping):
            continue
        try:
            in_flight, queued = float(entry.get("in_flight", 0)), float(entry.get("queued", 0))
        except (TypeError, ValueError):
            continue
        if all(math.isfinite(x) and x >= 0 for x in (in_flight, queued)):
            load[str(deployment_id)] = (in_flight, queued)
    return load


class InProcessLoadSource:
    """The load of the gateway in this process: `InProcessLoadSource(gateway.load)`.

    `report` returns (or, if async, resolves to) a report in the shape `parse_load_report` reads;
    called with no argument, the gateway reports every workspace's deployments.
    """

    def __init__(self, report: Callable[[], Any]) -> None:
        self.report = report

    async def load(self) -> Load:
        report = self.report()
        if inspect.isawaitable(report):
            report = await report
        return parse_load_report(report)


class HttpLoadSource:
    """GET /internal/load from each gateway at once, summed per deployment.

    `admin_key` must be an admin key of the operator workspace (the gateways' operator_workspace_id),
    or each gateway reports only that key's own workspace.
    """

    def __init__(self, gateway_urls: Sequence[str], admin_key: str, *, timeout: float = 2.0) -> None:
        """
        gateway_urls: base URL of each gateway, e.g. http://127.0.0.1:8080.
        admin_key: sent as `Authorization: Bearer ...`.
        timeout: seconds one gateway may take to answer before it counts for nothing this tick.
        """
        problems = []
        if not gateway_urls:
            problems.append("gateway_urls is empty; give the base URL of at least one gateway")
        if not admin_key:
            problems.append("admin_key is empty; give an admin key of the operator workspace")
        if not timeout > 0:
            problems.append(f"timeout is {timeout!r}; give the seconds a gateway may take, e.g. 2")
        if problems:
            raise SpecError("invalid gateway load source", problems, code="invalid_load_source")
        self.gateway_urls = [url.rstrip("/") for url in gateway_urls]
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {admin_key}"}
        self._client: httpx.AsyncClient | None = None
        self._quiet: set[str] = set()  # gateways whose last pull failed: logged once per outage

    async def load(self) -> Load:
        reports = await asyncio.gather(*(self._pull(url) for url in self.gateway_urls))
        total: Load = {}
        for report in reports:
            for deployment_id, (in_flight, queued) in report.items():
                summed_in_flight, summed_queued = total.get(deployment_id, (0.0, 0.0))
                total[deployment_id] = (summed_in_flight + in_flight, summed_queued + queued)
        return total

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _pull(self, url: str) -> Load:
        try:
            response = await self._http().get(f"{url}/internal/load")
            response.raise_for_status()
            report = parse_load_report(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            if url not in self._quiet:
                self._quiet.add(url)
                log.warning("gateway %s did not report its load (%s: %s); counting none from it until it answers",
                            url, type(exc).__name__, exc)
            return {}
        if url in self._quiet:
            self._quiet.discard(url)
            log.info("gateway %s reports its load again", url)
        return report

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # trust_env=False: gateways are reached directly, never through a proxy from the environment.
            self._client = httpx.AsyncClient(timeout=self.timeout, headers=self._headers, trust_env=False)
        return self._client


# -- the autoscaler -----------------------------------------------------------------------------

class AutoscalerConfig(BaseModel):
    """How much the autoscaler remembers, and the policy knobs it hands every decision."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    history_seconds: float = Field(
        900.0, gt=0, description="Seconds of load samples kept per deployment. A longer autoscaling_window "
                                 "is averaged over this much history only.")
    max_samples: int = Field(
        1024, ge=1, description="Most samples kept per deployment (one per tick); the oldest go first.")
    max_deployments: int = Field(
        10_000, ge=1, description="Most deployments whose samples and autoscaling state are kept in memory.")
    policy: PolicyConfig = Field(
        default_factory=PolicyConfig, description="Panic, tolerance and scale-down pacing of every decision.")


@dataclass(frozen=True, slots=True)
class ScalingChange:
    """A replica count the autoscaler wrote to the store."""

    deployment_id: str
    before: int
    after: int
    reason: str
    """The policy's sentence with the numbers behind the change."""
    panic: bool = False


@dataclass(frozen=True, slots=True)
class _Tracked:
    """One autoscaled deployment's memory; new settings start a fresh state."""

    settings: Autoscaling
    state: AutoscalingState


@dataclass(frozen=True, slots=True)
class _Planned:
    deployment: DeploymentRow
    """The row the decision was made from; the write happens only if it is still so."""
    decision: ScalingDecision
    tracked: _Tracked
    """The memory to keep once the change is written."""


@dataclass(frozen=True, slots=True)
class _Fleet:
    running: list[DeploymentRow]
    retiring: frozenset[str]


class Autoscaler:
    """Sets desired replica counts from load, once per control-loop tick; see the module docstring."""

    def __init__(self, source: LoadSource, config: AutoscalerConfig | None = None) -> None:
        self.source = source
        self.config = config or AutoscalerConfig()
        self.window = LoadWindow(max_age=self.config.history_seconds, max_samples=self.config.max_samples,
                                 max_deployments=self.config.max_deployments)
        self._tracked: OrderedDict[str, _Tracked] = OrderedDict()
        # What is failing now, by what failed ("load", "tick", "settings:<deployment id>"): each is
        # logged in full when it starts, briefly while it repeats, and once when it works again.
        self._failing: dict[str, str] = {}

    async def tick(self, store: Store, now: float) -> list[ScalingChange]:
        """Pull the load, decide, write; the changes written. Never raises: a failure is logged and
        the next tick starts over. A load source that fails adds no sample, so decisions read only
        older samples, and once the window holds none, counts hold."""
        try:
            load = await self._pull()
            fleet = await asyncio.to_thread(_read_fleet, store)
            planned = self._plan(fleet, load, now)
            changes = await asyncio.to_thread(self._write, store, planned, now) if planned else []
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed("tick", "autoscaling tick failed; replica counts hold until it works", exc)
            return []
        self._recovered("tick")
        for change in changes:
            tracked = next(p.tracked for p in planned if p.deployment.id == change.deployment_id)
            self._remember(change.deployment_id, tracked)
            log.info("autoscaling deployment %s from %d to %d replicas: %s", change.deployment_id,
                     change.before, change.after, change.reason, extra={"deployment_id": change.deployment_id})
        return changes

    def state_of(self, deployment_id: str) -> AutoscalingState | None:
        """What the policy remembers for an autoscaled deployment (None if it is not autoscaled now)."""
        tracked = self._tracked.get(deployment_id)
        return tracked.state if tracked else None

    # -- one tick --------------------------------------------------------------------------------

    async def _pull(self) -> Load:
        try:
            load = await self.source.load()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed("load", "reading the load failed; no new samples until it works", exc)
            return {}
        self._recovered("load")
        return load

    def _plan(self, fleet: _Fleet, load: Load, now: float) -> list[_Planned]:
        """Record the samples and decide every autoscaled deployment; the changes still to write."""
        running = {d.id for d in fleet.running}
        for deployment_id in self.window.deployment_ids():
            if deployment_id not in running:
                self.window.forget(deployment_id)
        for deployment_id in [d for d in self._tracked if d not in running]:
            del self._tracked[deployment_id]
        for key in [k for k in self._failing if k.startswith("settings:") and k[9:] not in running]:
            del self._failing[key]
        for deployment_id, (in_flight, queued) in load.items():
            if deployment_id in running:
                self.window.add(deployment_id, LoadSample(at=now, in_flight=in_flight, queued=queued))

        planned = []
        for deployment in fleet.running:
            settings = self._autoscaled(deployment, fleet.retiring)
            if settings is None:
                self._tracked.pop(deployment.id, None)
                continue
            before = self._tracked.get(deployment.id)
            state = before.state if before is not None and before.settings == settings else AutoscalingState()
            decision, state = AutoscalingPolicy(settings, self.config.policy).decide(
                self.window.samples(deployment.id, now), deployment.desired_replicas, state, now)
            after = _Tracked(settings, state)
            if decision.desired == deployment.desired_replicas:
                self._remember(deployment.id, after)
            else:  # the new state is kept only once the change is written
                planned.append(_Planned(deployment, decision, after))
        return planned

    def _autoscaled(self, deployment: DeploymentRow, retiring: frozenset[str]) -> Autoscaling | None:
        """The deployment's settings if the autoscaler decides its count, else None."""
        if deployment.status != "active" or deployment.id in retiring:
            return None
        try:
            settings = Autoscaling.model_validate(deployment.spec.get("autoscaling") or {})
        except ValidationError as exc:
            self._failed(f"settings:{deployment.id}", f"deployment {deployment.id} has invalid autoscaling "
                         "settings, so its replica count holds; fix them with PATCH "
                         f"/api/v1/deployments/{deployment.id}/autoscaling", exc)
            return None
        self._recovered(f"settings:{deployment.id}")
        return settings if settings.min_replica < settings.max_replica else None

    def _write(self, store: Store, planned: Sequence[_Planned], now: float) -> list[ScalingChange]:
        """Write each change whose deployment is as it was when decided; a management change that
        landed in between wins, and the next tick decides from it."""
        changes = []
        with store.transaction() as tx:
            for item in planned:
                seen = item.deployment
                if not _unchanged(tx, seen):
                    log.info("deployment %s changed while its replica count was decided; deciding again next tick",
                             seen.id, extra={"deployment_id": seen.id})
                    continue
                tx.deployments.update(seen.id, now, desired_replicas=item.decision.desired)
                changes.append(ScalingChange(seen.id, seen.desired_replicas, item.decision.desired,
                                             item.decision.reason, item.decision.panic))
        return changes

    # -- memory ----------------------------------------------------------------------------------

    def _remember(self, deployment_id: str, tracked: _Tracked) -> None:
        self._tracked[deployment_id] = tracked
        self._tracked.move_to_end(deployment_id)
        while len(self._tracked) > self.config.max_deployments:
            self._tracked.popitem(last=False)

    def _failed(self, key: str, what: str, exc: Exception) -> None:
        message = f"{what}: {type(exc).__name__}: {exc}"
        if self._failing.get(key) != message:
            log.error("%s", message, exc_info=exc)
        else:
            log.debug("%s", message)
        self._failing[key] = message

    def _recovered(self, key: str) -> None:
        failure = self._failing.pop(key, None)
        if failure is not None:
            log.info("works again after: %s", failure)


def _read_fleet(store: Store) -> _Fleet:
    with store.transaction() as tx:
        return _Fleet(running=tx.deployments.list_running(), retiring=_retiring(tx))


def _retiring(tx: Transaction) -> frozenset[str]:
    """Deployments every environment of which has been promoted to another, still starting, deployment."""
    serving_promoted_away = {e.deployment_id for e in tx.environments.list_pending() if e.deployment_id}
    retiring = set()
    for deployment_id in serving_promoted_away:
        environments = tx.environments.referencing(deployment_id)
        if all(e.deployment_id == deployment_id and e.pending_deployment_id not in (None, deployment_id)
               for e in environments):
            retiring.add(deployment_id)
    return frozenset(retiring)


def _unchanged(tx: Transaction, seen: DeploymentRow) -> bool:
    now = tx.deployments.get(seen.id)
    return (now is not None and now.status == seen.status and now.desired_replicas == seen.desired_replicas
            and now.spec.get("autoscaling") == seen.spec.get("autoscaling"))
