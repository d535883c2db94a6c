"""prefix_aware: send a prompt where its longest known prefix went last, within a load bound.

    request ──► chain = text_chunk_chain(prompt_text)       (or one hash of prompt_key)
                  │
                  ▼
    index.deepest(chain, candidates) ──► replica R holding the longest prefix
                  │                          │
          none, R's prefix under            R's prefix >= min_match_ratio of the chain,
          min_match_ratio of the            R.in_flight <= load_factor * fewest + load_slack, and
          chain, R over the bound,          R's matched chunks >= load_weight * (R.in_flight - fewest)
          or not worth its load              │
                  ▼                          ▼
            fewest in flight                 R
                  └──────────┬───────────────┘
                             ▼
               on_routed: index.record(chain, chosen)

The last test weighs what the prefix saves against the queue it joins, as `kv_aware` does with
blocks: every request in flight on R beyond the least loaded replica's count must be paid for by
`load_weight` matched chunks. A `prompt_key` (one hash, no text) has no size to weigh, so for it
the bound alone decides. A long conversation stays put; a short one moves to an idle replica rather than
wait behind a busy one, which keeps replicas even when conversations differ in length.

The index is approximate on purpose: it is what this gateway sent where, not what the replicas
hold, so it needs no tokenizer and no reports; a replica's engine may have evicted a prefix since,
which costs only a cache miss. The index is LRU-bounded (`PrefixAwareConfig.max_entries`).
"""

from __future__ import annotations

from typing import Sequence

from slipway.routing.base import ReplicaView, RouteRequest, RoutingPolicy
from slipway.routing.config import PrefixAwareConfig
from slipway.routing.hashing import text_chunk_chain
from slipway.routing.least_load import fewest_in_flight
from slipway.routing.prefix_index import PrefixIndex


class PrefixAware(RoutingPolicy):
    name = "prefix_aware"
    needs_prompt = True

    def __init__(self, config: PrefixAwareConfig | None = None) -> None:
        self.config = config or PrefixAwareConfig()
        self.index = PrefixIndex(self.config.max_entries)
        self._turn = 0
        # The chain of the request `_choose` last saw, so `on_routed` need not hash the prompt twice.
        self._last: tuple[RouteRequest, tuple[int, ...]] | None = None

    def prefix_chain(self, request: RouteRequest) -> tuple[int, ...]:
        """The hashes `request` is indexed by: its prompt text's chunk chain, else its prompt key."""
        config = self.config
        if request.prompt_text:
            return text_chunk_chain(request.prompt_text, config.chunk_chars, config.max_prefix_chars)
        if request.prompt_key:
            return text_chunk_chain(request.prompt_key, len(request.prompt_key), len(request.prompt_key))
        return ()

    def _choose(self, candidates: Sequence[ReplicaView], request: RouteRequest) -> ReplicaView:
        chain = self.prefix_chain(request)
        self._last = (request, chain)
        self._turn += 1
        least_loaded = fewest_in_flight(candidates, self._turn)
        if not chain:
            return least_loaded
        by_id = {r.replica_id: r for r in candidates}
        match = self.index.deepest(chain, by_id)
        if match is None or match.depth < self.config.min_match_ratio * len(chain):
            return least_loaded
        holder = by_id[match.replica_id]
        if holder.in_flight > self.config.load_limit(least_loaded.in_flight):
            return least_loaded
        # A prompt key is one hash for the whole prompt, with no size to weigh: the bound alone decides.
        if request.prompt_text and match.depth < self.config.load_weight * (holder.in_flight - least_loaded.in_flight):
            return least_loaded
        return holder

    def on_routed(self, request: RouteRequest, replica: ReplicaView) -> None:
        last = self._last
        chain = last[1] if last is not None and last[0] is request else self.prefix_chain(request)
        self._last = None
        if chain:
            self.index.record(chain, replica.replica_id)
