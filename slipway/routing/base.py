"""The routing contract: pick one replica of a deployment for one request.

    policy = get_policy("least_load")
    replica = policy.choose(replicas, RouteRequest(deployment_id), exclude=frozenset({"r-dead"}))
    if replica is None: ...      # no healthy replica outside `exclude`: the caller answers 503

A policy sees a snapshot of each replica (`ReplicaView`) taken by the caller at the moment of the
decision: in-flight count and health as the gateway knows them. It never does I/O and never reads
a clock, so the gateway and the fleet simulator drive the same code. Policies may keep state
between calls (a rotation counter, later a prefix index); one instance serves one deployment.

Contract of `choose`, for every policy:
  - the result is one of `replicas`, healthy, and not in `exclude`;
  - the result is None only when no replica is both healthy and outside `exclude`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica as the caller sees it right now."""

    replica_id: str
    url: str
    in_flight: int
    """Requests sent to it and not yet answered to their last byte."""
    healthy: bool
    """Ready in the routing snapshot and not marked down by a recent failure."""


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What a policy may know of the request being routed."""

    deployment_id: str
    prompt_key: str | None = None
    """A stable digest of the prompt's leading text, for prefix-aware policies; None when unknown."""


class RoutingPolicy(ABC):
    """Chooses a replica for a request. Subclasses set `name` and implement `_choose`."""

    name: str = ""

    def choose(self, replicas: Sequence[ReplicaView], request: RouteRequest, *,
               exclude: frozenset[str] = frozenset()) -> ReplicaView | None:
        """A healthy replica not in `exclude`, or None when there is none."""
        candidates = [r for r in replicas if r.healthy and r.replica_id not in exclude]
        if not candidates:
            return None
        return self._choose(candidates, request)

    @abstractmethod
    def _choose(self, candidates: Sequence[ReplicaView], request: RouteRequest) -> ReplicaView:
        """Pick one of `candidates` (never empty; every one healthy and allowed)."""
