"""kv_aware: the replica that would prefill the fewest blocks, weighed against its load.

For a request whose prompt hashes to blocks b0 b1 … b(n-1) (`hashing.block_hash_chain`), each
candidate replica r within the load bound costs

    cost(r) = (n - cached_run(r)) + load_weight * r.in_flight

where cached_run(r) counts the leading blocks r holds: b0..b(k-1) all in r's reported
`cached_block_hashes`, or sent to r by this policy recently (`KvAwareConfig.learn_routed`). The
cheapest wins; ties go to the less loaded, then in turn. This is the cost NVIDIA Dynamo's KV router
minimises (prefill blocks plus weighted load), with requests in flight as the load.

    replica  cached run  prefill  in flight  cost (n = 8, load_weight = 4)
    r0       6           2        3          2 + 12 = 14
    r1       0           8        0          8 + 0  =  8
    r2       8           0        1          0 + 4  =  4   <- chosen

Only a run from the first block counts: a block is reusable only after its whole prefix. The
load bound (`load_factor`, `load_slack`) is applied first, so a hot cache never overloads one
replica; without block hashes the policy is least load within that bound, i.e. least load.
"""

from __future__ import annotations

from typing import Sequence

from slipway.routing.base import ReplicaView, RouteRequest, RoutingPolicy
from slipway.routing.config import KvAwareConfig
from slipway.routing.prefix_index import PrefixIndex


class KvAware(RoutingPolicy):
    name = "kv_aware"
    needs_prompt = True
    needs_block_hashes = True

    def __init__(self, config: KvAwareConfig | None = None) -> None:
        self.config = config or KvAwareConfig()
        self.routed = PrefixIndex(self.config.max_entries)
        """Blocks this policy sent where, until replicas report them (used when learn_routed is on)."""
        self._turn = 0

    def cached_run(self, replica: ReplicaView, block_hashes: Sequence[int]) -> int:
        """How many leading blocks of `block_hashes` `replica` holds, as reported or as routed here."""
        reported = replica.cached_block_hashes or frozenset()
        routed_to = self.routed.owner if self.config.learn_routed else None
        replica_id = replica.replica_id
        run = 0
        for block_hash in block_hashes:
            if block_hash in reported or (routed_to is not None and routed_to(block_hash) == replica_id):
                run += 1
            else:
                break
        return run

    def cost(self, replica: ReplicaView, block_hashes: Sequence[int]) -> float:
        """Blocks `replica` would prefill for this prompt plus its weighted load."""
        prefill = len(block_hashes) - self.cached_run(replica, block_hashes)
        return prefill + self.config.load_weight * replica.in_flight

    def _choose(self, candidates: Sequence[ReplicaView], request: RouteRequest) -> ReplicaView:
        config = self.config
        block_hashes = request.block_hashes[:config.max_request_blocks]
        limit = config.load_limit(min(r.in_flight for r in candidates))
        within = [r for r in candidates if r.in_flight <= limit]
        scored = [((self.cost(r, block_hashes), r.in_flight), r) for r in within]
        best = min(key for key, _ in scored)
        tied = [r for key, r in scored if key == best]
        self._turn += 1
        return tied[self._turn % len(tied)]

    def on_routed(self, request: RouteRequest, replica: ReplicaView) -> None:
        if self.config.learn_routed and request.block_hashes:
            self.routed.record(request.block_hashes[:self.config.max_request_blocks], replica.replica_id)
