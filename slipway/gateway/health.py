"""What this gateway knows of replicas beyond the snapshot: requests in flight and recent failures.

In-flight counts feed `least_load` and `/internal/load`. Passive health: a replica that failed
before sending a byte (refused, reset, 503 while draining) is marked down for a cooldown, or until
a newer snapshot says it is ready. A mark only makes the router prefer other replicas: when every
ready replica is marked, they are tried anyway, because a snapshot that says ready is a better
guess than answering 503 to everyone.
"""

from __future__ import annotations

from slipway.routing import ReplicaView, RouteRequest
from slipway.spec.snapshot import RoutingSnapshot
from slipway.gateway.table import DeploymentRoute

# Most replicas with a down mark remembered; marks of replicas gone from snapshots are dropped.
_MAX_MARKS = 10_000


class ReplicaTracker:
    def __init__(self, cooldown: float) -> None:
        self.cooldown = cooldown
        self.in_flight: dict[str, int] = {}
        self.in_flight_by_deployment: dict[str, int] = {}
        self._down_until: dict[str, float] = {}

    def choose(self, route: DeploymentRoute, request: RouteRequest, exclude: frozenset[str],
               now: float) -> ReplicaView | None:
        """The replica `route`'s policy picks, preferring ones not marked down."""
        down = self._down_until
        in_flight = self.in_flight
        views = [ReplicaView(r.replica_id, r.url, in_flight.get(r.replica_id, 0),
                             r.ready and (not down or down.get(r.replica_id, 0.0) <= now))
                 for r in route.replicas]
        chosen = route.policy.choose(views, request, exclude=exclude)
        if chosen is None and down:
            views = [ReplicaView(r.replica_id, r.url, in_flight.get(r.replica_id, 0), r.ready)
                     for r in route.replicas]
            chosen = route.policy.choose(views, request, exclude=exclude)
        return chosen

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

    def mark_down(self, replica_id: str, now: float) -> None:
        if len(self._down_until) >= _MAX_MARKS:
            self._down_until = {k: v for k, v in self._down_until.items() if v > now}
        self._down_until[replica_id] = now + self.cooldown

    def is_marked_down(self, replica_id: str, now: float) -> bool:
        return self._down_until.get(replica_id, 0.0) > now

    def on_snapshot(self, snapshot: RoutingSnapshot) -> None:
        """A newer snapshot: its word on readiness replaces our marks."""
        if not self._down_until:
            return
        ready = {r.replica_id for d in snapshot.deployments for r in d.replicas if r.ready}
        self._down_until = {rid: until for rid, until in self._down_until.items() if rid not in ready}
