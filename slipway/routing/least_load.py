"""least_load: the replica with the fewest requests in flight; ties taken in turn.

Rotating among equally loaded replicas matters most when load is light: with one request at a
time every replica shows 0 in flight, and a first-of-the-list rule would send everything to one.
"""

from __future__ import annotations

from typing import Sequence

from slipway.routing.base import ReplicaView, RouteRequest, RoutingPolicy


class LeastLoad(RoutingPolicy):
    name = "least_load"

    def __init__(self) -> None:
        self._turn = 0

    def _choose(self, candidates: Sequence[ReplicaView], request: RouteRequest) -> ReplicaView:
        fewest = min(r.in_flight for r in candidates)
        tied = [r for r in candidates if r.in_flight == fewest]
        self._turn += 1
        return tied[self._turn % len(tied)]
