"""least_load: the replica with the fewest requests in flight.

Two modes (`LeastLoadConfig.mode`):
  - exact (the default): scan every candidate, ties taken in turn. Rotating among equally loaded
    replicas matters most when load is light: with one request at a time every replica shows 0
    in flight, and a first-of-the-list rule would send everything to one.
  - two_choices: sample two distinct candidates and take the less loaded (Mitzenmacher's power of
    two choices). With several gateways each seeing only its own in-flight counts, an exact scan
    sends every gateway's burst to the same "emptiest" replica; two random choices keep nearly all
    of the balance of a full scan without that herding.
"""

from __future__ import annotations

import random
from typing import Sequence

from slipway.routing.base import ReplicaView, RouteRequest, RoutingPolicy
from slipway.routing.config import LeastLoadConfig


def fewest_in_flight(candidates: Sequence[ReplicaView], turn: int) -> ReplicaView:
    """The least loaded of `candidates`; among ties, the one at `turn` (modulo their number)."""
    fewest = min(r.in_flight for r in candidates)
    tied = [r for r in candidates if r.in_flight == fewest]
    return tied[turn % len(tied)]


class LeastLoad(RoutingPolicy):
    name = "least_load"

    def __init__(self, config: LeastLoadConfig | None = None, *, rng: random.Random | None = None) -> None:
        self.config = config or LeastLoadConfig()
        self._rng = rng if rng is not None else random.Random(self.config.seed)
        self._turn = 0

    def _choose(self, candidates: Sequence[ReplicaView], request: RouteRequest) -> ReplicaView:
        if self.config.mode == "two_choices" and len(candidates) > 2:
            first, second = self._rng.sample(candidates, 2)
            return second if second.in_flight < first.in_flight else first
        self._turn += 1
        return fewest_in_flight(candidates, self._turn)
