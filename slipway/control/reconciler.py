"""The reconciler: makes the replicas a backend runs match the desired deployments, tick by tick.

    tick(desired, now)
      observed = backend.observe()
      memory   = remember(memory, observed, now)               pure: crash times, ready streaks
      actions  = plan(desired, observed, now, memory, policy)   pure: start / stop / forget, each with a reason
      run the actions (a stop drains in the background: it must not hold up the loop)
      -> ReconcileReport(replicas, failed, changed)

A replica being stopped is reported DRAINING from the tick that decides to stop it, while it
still runs and serves: the backend is asked to stop it (SIGTERM for a local process) only
`stop_grace` seconds later. The report of that tick becomes the routing snapshot, so by the time
the replica starts refusing new requests (503 while draining) no gateway sends it any; without
the grace, requests routed in the moment between the signal and the new snapshot would find the
replica refusing them, and a retry could land on another replica stopped in the same tick.

It is level-triggered: nothing is remembered about what was asked before, only about what was
seen, so a tick after a control-plane restart (replicas adopted by the backend) decides exactly
as a tick before it would have. Live replicas (STARTING or READY) of every origin count towards a
deployment's desired number, which is why adoption never leads to duplicates.

A deployment's replicas fill slots. When a replica crashes, its slot is refilled after a backoff
that doubles with each crash in a row of that slot (backoff_initial, 2x, 4x, ... up to
backoff_max); the count goes back to zero once a replica of the slot stays READY for
`reset_after` seconds. A FAILED replica (its package's load() raised) is never restarted: the
deployment is reported in `failed` with the tail of the log, and no new replica is started for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from slipway.backends.base import Backend
from slipway.spec.replica import ReplicaLaunch, ReplicaObservation, ReplicaState

log = logging.getLogger(__name__)

# States of a process that has ended: nothing to stop, only to forget.
ENDED = (ReplicaState.STOPPED, ReplicaState.CRASHED, ReplicaState.FAILED)


@dataclass(frozen=True)
class DesiredDeployment:
    """What the store wants running for one deployment."""

    deployment_id: str
    replicas: int
    """Desired number of live replicas."""
    package_dir: str
    """Absolute path of the deployment's package snapshot."""
    env: dict[str, str]
    """Extra environment for each replica."""
    cpu: float = 1.0
    memory_bytes: int = 0


@dataclass
class ReconcileReport:
    """What one tick saw and did."""

    replicas: list[ReplicaObservation]
    """Every replica currently managed, with its state and url."""
    failed: dict[str, str]
    """deployment_id -> why it failed: the replica's exit and the last lines of its log (the traceback)."""
    changed: bool
    """Whether any replica appeared, disappeared, or changed state or url since the last tick."""


@dataclass(frozen=True)
class BackoffPolicy:
    """How long a crashed replica's slot waits before it is refilled."""

    initial: float = 0.5
    """Seconds to wait after the first crash in a row."""
    max: float = 30.0
    """Longest wait, however many crashes in a row."""
    reset_after: float = 60.0
    """Seconds a replica must stay READY before its slot's crash count returns to zero."""

    def delay(self, crashes: int) -> float:
        """The wait after the `crashes`-th crash in a row (1 is the first)."""
        return min(self.initial * 2 ** max(crashes - 1, 0), self.max)


@dataclass(frozen=True)
class Memory:
    """What the reconciler remembers between ticks, all keyed by replica id and dropped with the replica."""

    prior_crashes: Mapping[str, int] = field(default_factory=dict)
    """Crashes in a row of the replica's slot before it was started."""
    crashed_at: Mapping[str, float] = field(default_factory=dict)
    """When a CRASHED replica was first seen crashed."""
    ready_since: Mapping[str, float] = field(default_factory=dict)
    """When a READY replica was first seen ready, this streak."""
    stopping: frozenset[str] = frozenset()
    """Replicas a stop was issued for."""

    def without(self, replica_id: str) -> "Memory":
        return Memory(
            prior_crashes={k: v for k, v in self.prior_crashes.items() if k != replica_id},
            crashed_at={k: v for k, v in self.crashed_at.items() if k != replica_id},
            ready_since={k: v for k, v in self.ready_since.items() if k != replica_id},
            stopping=self.stopping - {replica_id},
        )


@dataclass(frozen=True)
class Action:
    """One step that brings the world closer to the desired state."""

    kind: Literal["start", "stop", "forget"]
    deployment_id: str
    reason: str
    replica_id: str | None = None
    """The replica to stop or forget (None for start: the reconciler names new replicas)."""
    desired: DesiredDeployment | None = None
    """For start: what to launch."""
    prior_crashes: int = 0
    """For start: the crash streak of the slot the new replica fills."""


def remember(memory: Memory, observed: Sequence[ReplicaObservation], now: float, policy: BackoffPolicy) -> Memory:
    """Memory updated with one observation: crash times, ready streaks, streak resets; gone replicas dropped."""
    seen = {o.replica_id for o in observed}
    prior_crashes = {k: v for k, v in memory.prior_crashes.items() if k in seen}
    crashed_at = {k: v for k, v in memory.crashed_at.items() if k in seen}
    ready_since: dict[str, float] = {}
    for replica in observed:
        if replica.state == ReplicaState.READY:
            since = ready_since[replica.replica_id] = memory.ready_since.get(replica.replica_id, now)
            if now - since >= policy.reset_after:
                prior_crashes.pop(replica.replica_id, None)
        elif replica.state == ReplicaState.CRASHED:
            crashed_at.setdefault(replica.replica_id, now)
    return Memory(prior_crashes=prior_crashes, crashed_at=crashed_at, ready_since=ready_since,
                  stopping=frozenset(memory.stopping & seen))


def plan(desired: Sequence[DesiredDeployment], observed: Sequence[ReplicaObservation], now: float,
         memory: Memory | None = None, policy: BackoffPolicy | None = None) -> list[Action]:
    """The actions that move `observed` towards `desired` at time `now`. Pure: no I/O, no clock."""
    memory = memory or Memory()
    policy = policy or BackoffPolicy()
    wanted = {d.deployment_id: d for d in desired}
    by_deployment: dict[str, list[ReplicaObservation]] = {}
    for replica in observed:
        by_deployment.setdefault(replica.deployment_id, []).append(replica)
    actions: list[Action] = []
    for deployment_id, replicas in by_deployment.items():
        if deployment_id not in wanted:
            actions += _retire(deployment_id, replicas, memory)
    for deployment in desired:
        actions += _plan_deployment(deployment, by_deployment.get(deployment.deployment_id, []), now, memory, policy)
    return actions


def _retire(deployment_id: str, replicas: list[ReplicaObservation], memory: Memory) -> list[Action]:
    actions = []
    for replica in replicas:
        if replica.state in ENDED:
            actions.append(Action("forget", deployment_id, f"{replica.state.value}; deployment is no longer desired",
                                  replica_id=replica.replica_id))
        elif replica.replica_id not in memory.stopping:
            actions.append(Action("stop", deployment_id, "deployment is no longer desired",
                                  replica_id=replica.replica_id))
    return actions


def _stop_order(replica: ReplicaObservation) -> tuple[bool, float]:
    """Not-ready replicas go first (they serve nobody yet), then the newest."""
    return replica.state == ReplicaState.READY, -replica.started_at


def _plan_deployment(deployment: DesiredDeployment, replicas: list[ReplicaObservation], now: float,
                     memory: Memory, policy: BackoffPolicy) -> list[Action]:
    deployment_id = deployment.deployment_id
    actions: list[Action] = []
    live, crashed, failed = [], [], []
    for replica in replicas:
        if replica.state == ReplicaState.STOPPED:
            actions.append(Action("forget", deployment_id, "stopped", replica_id=replica.replica_id))
        elif replica.state == ReplicaState.FAILED:
            failed.append(replica)
        elif replica.state == ReplicaState.CRASHED:
            crashed.append(replica)
        elif replica.replica_id in memory.stopping:
            continue  # on its way out
        elif replica.state == ReplicaState.DRAINING:
            actions.append(Action("stop", deployment_id, "draining though no stop was asked; it will not serve "
                                  "again", replica_id=replica.replica_id))
        else:
            live.append(replica)

    surplus = len(live) - deployment.replicas
    for replica in sorted(live, key=_stop_order)[:max(surplus, 0)]:
        actions.append(Action("stop", deployment_id, f"{len(live)} live replicas, {deployment.replicas} desired",
                              replica_id=replica.replica_id))

    # A load() that raised would raise again: start nothing more for a failed deployment.
    open_slots = 0 if failed else max(deployment.replicas - len(live), 0)
    crashed.sort(key=lambda r: memory.crashed_at.get(r.replica_id, now))
    for replica in crashed:
        if open_slots == 0:
            actions.append(Action("forget", deployment_id, f"crashed ({replica.detail}); its slot is not needed",
                                  replica_id=replica.replica_id))
            continue
        open_slots -= 1
        crashes = memory.prior_crashes.get(replica.replica_id, 0) + 1
        retry_at = memory.crashed_at.get(replica.replica_id, now) + policy.delay(crashes)
        if now >= retry_at:
            actions.append(Action("forget", deployment_id, f"crashed ({replica.detail}); replaced",
                                  replica_id=replica.replica_id))
            actions.append(Action("start", deployment_id, f"replaces {replica.replica_id}: crash {crashes} in a row",
                                  desired=deployment, prior_crashes=crashes))
        # else: the slot waits out its backoff, and counts as taken meanwhile.
    for _ in range(open_slots):
        actions.append(Action("start", deployment_id, f"{len(live)} live replicas, {deployment.replicas} desired",
                              desired=deployment))
    return actions


def _as_stopping(replica: ReplicaObservation, stopping: frozenset[str]) -> ReplicaObservation:
    """A replica a stop was issued for is draining, even while the backend still sees it serve (its stop
    grace): reporting it ready again would route new requests to it just before it refuses them."""
    if replica.replica_id not in stopping or replica.state not in (ReplicaState.STARTING, ReplicaState.READY):
        return replica
    return replica.model_copy(update={"state": ReplicaState.DRAINING, "detail": "stopping: routed no new requests"})


def new_replica_id() -> str:
    return f"r-{secrets.token_hex(6)}"


class Reconciler:
    """Runs `plan` against a backend every tick; a replica that misbehaves is logged, never raised."""

    def __init__(self, backend: Backend, *, backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 drain_timeout: float = 30.0, reset_after: float = 60.0, failure_log_lines: int = 50,
                 stop_grace: float = 1.0) -> None:
        """
        backoff_initial: seconds before a crashed replica's slot is refilled, after its first crash in a row.
        backoff_max: the longest such wait; it doubles per crash in a row up to this.
        drain_timeout: seconds a stopped replica may drain before it is killed.
        reset_after: seconds a replica must stay ready before its slot's crash count resets.
        failure_log_lines: lines of a failed replica's log reported as the reason of the failure.
        stop_grace: seconds a replica being stopped is reported draining, still serving what it was
            sent, before the backend is asked to stop it; long enough for every gateway to have the
            routing snapshot without it (see the module docstring). 0 stops at once.
        """
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError(f"need 0 < backoff_initial <= backoff_max, got {backoff_initial} and {backoff_max}")
        if drain_timeout < 0 or reset_after < 0 or stop_grace < 0 or failure_log_lines < 1:
            raise ValueError("drain_timeout, reset_after and stop_grace must be >= 0 seconds and "
                             "failure_log_lines >= 1")
        self.backend = backend
        self.policy = BackoffPolicy(initial=backoff_initial, max=backoff_max, reset_after=reset_after)
        self.drain_timeout = drain_timeout
        self.stop_grace = stop_grace
        self.failure_log_lines = failure_log_lines
        self.memory = Memory()
        self._replicas: dict[str, ReplicaObservation] = {}
        self._signature: dict[str, tuple[ReplicaState, str | None]] | None = None
        self._failure_reasons: dict[str, str] = {}  # a dead replica's log no longer changes
        self._stops: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        """Take in what the backend already runs (replicas adopted from an earlier control plane)."""
        observed = await self.backend.observe()
        self._replicas = {o.replica_id: o for o in observed}
        if observed:
            log.info("reconciler found %d replica(s) already running", len(observed))

    async def tick(self, desired: Sequence[DesiredDeployment], now: float) -> ReconcileReport:
        """Observe, plan and act once; see the module docstring."""
        try:
            observed = await self.backend.observe()
        except Exception:
            # Acting on a stale picture could start duplicates: report the last one and act next tick.
            log.exception("backend observe failed; skipping this tick's actions")
            return ReconcileReport(list(self._replicas.values()), await self._failures(self._replicas), False)
        self.memory = remember(self.memory, observed, now, self.policy)
        current = {o.replica_id: _as_stopping(o, self.memory.stopping) for o in observed}
        for action in plan(desired, observed, now, self.memory, self.policy):
            await self._run(action, current)
        self._replicas = current
        signature = {r.replica_id: (r.state, r.url) for r in current.values()}
        changed = signature != self._signature
        self._signature = signature
        return ReconcileReport(list(current.values()), await self._failures(current), changed)

    async def shutdown(self, *, stop_replicas: bool) -> None:
        """End background stops; with `stop_replicas`, stop and forget every replica first."""
        if stop_replicas:
            try:
                observed = await self.backend.observe()
            except Exception:
                log.exception("backend observe failed during shutdown; stopping the replicas last seen")
                observed = list(self._replicas.values())
            # Everything stops, the gateway included: no grace for routing to catch up. Stops still
            # in their grace are cancelled and issued now.
            for task in self._stops.values():
                task.cancel()
            await asyncio.gather(*self._stops.values(), return_exceptions=True)
            self._stops.clear()
            await asyncio.gather(*(self._stop(o.replica_id, grace=0.0) for o in observed), return_exceptions=True)
            for replica in observed:
                try:
                    await self.backend.forget(replica.replica_id)
                except Exception:
                    log.exception("could not forget replica %s", replica.replica_id)
            self._replicas.clear()
        else:
            # A replica already sent SIGTERM drains and exits by itself; the next control plane
            # adopts it if it has not yet, sees it draining, and stops it. One still in its stop
            # grace keeps serving, and the next control plane stops it if it is still surplus.
            for task in self._stops.values():
                task.cancel()
            await asyncio.gather(*self._stops.values(), return_exceptions=True)
        self._stops.clear()

    # Actions -----------------------------------------------------------------------------
    async def _run(self, action: Action, current: dict[str, ReplicaObservation]) -> None:
        try:
            if action.kind == "start":
                await self._start(action, current)
            elif action.kind == "stop":
                assert action.replica_id is not None
                log.info("stopping replica %s: %s", action.replica_id, action.reason,
                         extra={"replica_id": action.replica_id, "deployment_id": action.deployment_id})
                self.memory = dataclasses.replace(self.memory, stopping=self.memory.stopping | {action.replica_id})
                self._stops[action.replica_id] = asyncio.get_running_loop().create_task(
                    self._stop(action.replica_id, grace=self.stop_grace))
                if action.replica_id in current:
                    current[action.replica_id] = current[action.replica_id].model_copy(
                        update={"state": ReplicaState.DRAINING, "detail": f"stopping: {action.reason}"})
            else:
                assert action.replica_id is not None
                log.info("forgetting replica %s: %s", action.replica_id, action.reason,
                         extra={"replica_id": action.replica_id, "deployment_id": action.deployment_id})
                await self.backend.forget(action.replica_id)
                current.pop(action.replica_id, None)
                self.memory = self.memory.without(action.replica_id)
                self._failure_reasons.pop(action.replica_id, None)
        except Exception:
            log.exception("reconcile action failed: %s %s (%s)", action.kind, action.replica_id or "a replica",
                          action.reason, extra={"deployment_id": action.deployment_id})

    async def _start(self, action: Action, current: dict[str, ReplicaObservation]) -> None:
        desired = action.desired
        assert desired is not None
        replica_id = new_replica_id()
        log.info("starting replica %s: %s", replica_id, action.reason,
                 extra={"replica_id": replica_id, "deployment_id": desired.deployment_id})
        observation = await self.backend.start(ReplicaLaunch(
            replica_id=replica_id, deployment_id=desired.deployment_id, package_dir=desired.package_dir,
            env=dict(desired.env), cpu=desired.cpu, memory_bytes=desired.memory_bytes,
        ))
        current[observation.replica_id] = observation
        if action.prior_crashes:
            self.memory = dataclasses.replace(
                self.memory, prior_crashes={**self.memory.prior_crashes, observation.replica_id: action.prior_crashes})

    async def _stop(self, replica_id: str, *, grace: float) -> None:
        try:
            if grace > 0:
                await asyncio.sleep(grace)  # reported draining meanwhile: gateways stop routing to it first
            await self.backend.stop(replica_id, drain_timeout=self.drain_timeout)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stopping replica %s failed; the next tick tries again", replica_id)
            self.memory = dataclasses.replace(self.memory, stopping=self.memory.stopping - {replica_id})
        finally:
            self._stops.pop(replica_id, None)

    async def _failures(self, replicas: Mapping[str, ReplicaObservation]) -> dict[str, str]:
        failed: dict[str, str] = {}
        for replica in replicas.values():
            if replica.state != ReplicaState.FAILED or replica.deployment_id in failed:
                continue
            reason = self._failure_reasons.get(replica.replica_id)
            if reason is None:
                try:
                    tail = await self.backend.logs(replica.replica_id, tail=self.failure_log_lines)
                except Exception as exc:
                    tail = f"(its log could not be read: {exc})"
                reason = self._failure_reasons[replica.replica_id] = (
                    f"replica {replica.replica_id}: {replica.detail or 'load() raised'}\n{tail}")
            failed[replica.deployment_id] = reason
        self._failure_reasons = {k: v for k, v in self._failure_reasons.items() if k in replicas}
        return failed
