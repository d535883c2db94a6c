"""round_robin: each healthy replica in turn, whatever its load."""

from __future__ import annotations

from typing import Sequence

from slipway.routing.base import ReplicaView, RouteRequest, RoutingPolicy


class RoundRobin(RoutingPolicy):
    name = "round_robin"

    def __init__(self) -> None:
        self._turn = 0

    def _choose(self, candidates: Sequence[ReplicaView], request: RouteRequest) -> ReplicaView:
        self._turn += 1
        return candidates[self._turn % len(candidates)]
