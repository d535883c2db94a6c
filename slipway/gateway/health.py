"""What this gateway knows of replicas beyond the snapshot: requests in flight, and a circuit breaker each.

In-flight counts feed `least_load` and `/internal/load`; the KV blocks that replicas of kv_aware
deployments report (`cached_blocks`, kept by replica_stats.py) go into their `ReplicaView`s. The
circuit breaker keeps a failing replica out of rotation (time passed in, so tests need no clock):

    closed ──`failures_to_open` failures in a row──► open ──cooldown over──► half-open
      ▲       (just one if the connection is       (out of rotation)    │ its next request
      │        refused, or it drains: 503)               ▲              ▼ is the probe
      │                                                  └─ fails ── probing
      └──────────────────────────── succeeds ───────────────────────────┘

A failed request: no answer (refused, reset, no headers in time), a 5xx answer, or an answer that
broke off midway. A request the client gave up on counts neither way. A refused connection or a
503 from a draining replica opens the breaker at once: nothing there can answer. Other failures
need several in a row, so one bad request does not take a replica out.

A newer snapshot in which a replica turns ready (it was not ready, or absent, in the previous one)
closes its breaker: the control plane has seen it come back. Replicas gone from the snapshot are
forgotten.

Out of rotation only makes the router prefer other replicas: when every ready replica is out,
they are tried anyway, because a snapshot that says ready is a better guess than answering 503 to
everyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from slipway.gateway.table import DeploymentRoute
from slipway.routing import ReplicaView, RouteRequest
from slipway.spec.snapshot import RoutingSnapshot

# Most replicas with a breaker remembered; closed ones are dropped first past this.
_MAX_BREAKERS = 10_000


@dataclass(slots=True)
class _Breaker:
    """One replica's failures; it exists only while the replica has failed since its last success."""

    failures: int = 0
    """Failed requests in a row."""
    open_until: float | None = None
    """None: closed. Otherwise out of rotation until then, half-open after."""
    probing: bool = False
    """Half-open with its one probe request in flight."""


class ReplicaTracker:
    def __init__(self, cooldown: float, failures_to_open: int = 3,
                 cached_blocks: Mapping[str, frozenset[int]] | None = None) -> None:
        self.cooldown = cooldown
        self.failures_to_open = failures_to_open
        self.cached_blocks: Mapping[str, frozenset[int]] = cached_blocks if cached_blocks is not None else {}
        """replica id -> KV block hashes it last reported (kv_aware deployments only)."""
        self.in_flight: dict[str, int] = {}
        self.in_flight_by_deployment: dict[str, int] = {}
        self._breakers: dict[str, _Breaker] = {}
        self._ready: frozenset[str] = frozenset()

    def choose(self, route: DeploymentRoute, request: RouteRequest, exclude: frozenset[str],
               now: float) -> ReplicaView | None:
        """The replica `route`'s policy picks, preferring ones whose breaker lets a request through."""
        breakers = self._breakers
        in_flight = self.in_flight
        cached = self.cached_blocks
        views = [ReplicaView(r.replica_id, r.url, in_flight.get(r.replica_id, 0),
                             r.ready and (not breakers or self._admits(r.replica_id, now)), cached.get(r.replica_id))
                 for r in route.replicas]
        chosen = route.policy.choose(views, request, exclude=exclude)
        if not breakers:
            return chosen
        if chosen is None:
            views = [ReplicaView(r.replica_id, r.url, in_flight.get(r.replica_id, 0), r.ready, cached.get(r.replica_id))
                     for r in route.replicas]
            return route.policy.choose(views, request, exclude=exclude)
        breaker = breakers.get(chosen.replica_id)
        if breaker is not None and breaker.open_until is not None:
            breaker.probing = True  # half-open: this request is its probe
        return chosen

    # -- in flight ------------------------------------------------------------------------------

    def begin(self, replica_id: str, deployment_id: str) -> None:
        self.in_flight[replica_id] = self.in_flight.get(replica_id, 0) + 1
        self.in_flight_by_deployment[deployment_id] = self.in_flight_by_deployment.get(deployment_id, 0) + 1

    def end(self, replica_id: str, deployment_id: str) -> None:
        left = self.in_flight.get(replica_id, 1) - 1
        if left > 0:
            self.in_flight[replica_id] = left
        else:
            self.in_flight.pop(replica_id, None)
        left = self.in_flight_by_deployment.get(deployment_id, 1) - 1
        if left > 0:
            self.in_flight_by_deployment[deployment_id] = left
        else:
            self.in_flight_by_deployment.pop(deployment_id, None)

    # -- outcomes -------------------------------------------------------------------------------

    def succeeded(self, replica_id: str) -> None:
        """The replica answered: its breaker closes."""
        if self._breakers:
            self._breakers.pop(replica_id, None)

    def failed(self, replica_id: str, now: float, *, at_once: bool = False) -> None:
        """The replica failed a request; `at_once` (nothing can answer there) opens the breaker now."""
        breaker = self._breakers.get(replica_id)
        if breaker is None:
            if len(self._breakers) >= _MAX_BREAKERS:
                self._forget_closed()
            breaker = self._breakers[replica_id] = _Breaker()
        breaker.failures += 1
        half_open = breaker.open_until is not None
        if at_once or half_open or breaker.failures >= self.failures_to_open:
            breaker.open_until = now + self.cooldown
            breaker.probing = False

    def released(self, replica_id: str) -> None:
        """The request ended with no word on the replica's health (the client left): a probe may go again."""
        breaker = self._breakers.get(replica_id) if self._breakers else None
        if breaker is not None:
            breaker.probing = False

    def mark_down(self, replica_id: str, now: float) -> None:
        """Out of rotation for a cooldown now (a refused connection, a draining replica)."""
        self.failed(replica_id, now, at_once=True)

    # -- reading --------------------------------------------------------------------------------

    def state(self, replica_id: str, now: float) -> str:
        """'closed', 'open' (out of rotation), 'half_open' (its next request is a probe) or 'probing'."""
        breaker = self._breakers.get(replica_id)
        if breaker is None or breaker.open_until is None:
            return "closed"
        if now < breaker.open_until:
            return "open"
        return "probing" if breaker.probing else "half_open"

    def is_marked_down(self, replica_id: str, now: float) -> bool:
        """Whether the router skips the replica now (open, or half-open with its probe in flight)."""
        return self.state(replica_id, now) in ("open", "probing")

    def on_snapshot(self, snapshot: RoutingSnapshot) -> None:
        """A newer snapshot: replicas that turned ready in it start afresh; gone ones are forgotten."""
        ready = frozenset(r.replica_id for d in snapshot.deployments for r in d.replicas if r.ready)
        turned_ready, self._ready = ready - self._ready, ready
        if not self._breakers:
            return
        present = {r.replica_id for d in snapshot.deployments for r in d.replicas}
        self._breakers = {replica_id: breaker for replica_id, breaker in self._breakers.items()
                          if replica_id in present and replica_id not in turned_ready}

    def _admits(self, replica_id: str, now: float) -> bool:
        breaker = self._breakers.get(replica_id)
        if breaker is None or breaker.open_until is None:
            return True
        return now >= breaker.open_until and not breaker.probing

    def _forget_closed(self) -> None:
        self._breakers = {k: b for k, b in self._breakers.items() if b.open_until is not None}
