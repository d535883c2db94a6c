"""The prefix index: prefix hash -> the replica that last took a request with that prefix.

    index = PrefixIndex(max_entries=50_000)
    index.record(chain, "r-1")                   # after routing; refreshes every hash of the chain
    index.deepest(chain, {"r-1", "r-2"})         # PrefixMatch("r-1", depth=len(chain)) or None
    index.owner(chain[0])                        # "r-1"; reading never changes recency

Keys are the hashes of a chain (`hashing.text_chunk_chain` or `block_hash_chain`), each standing
for a whole prefix, so the index is a flattened radix tree: one entry per prefix node. It is an
LRU map bounded by `max_entries` whatever the traffic. A chain is recorded root first, so when the
index overflows it forgets a chain's shallow nodes before its deep ones; `deepest` therefore looks
from the deep end rather than stopping at the first miss. Entries of replicas that left need no
cleanup: `deepest` skips owners outside `allowed`, and recency ages them out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from typing import NamedTuple, Sequence


class PrefixMatch(NamedTuple):
    replica_id: str
    depth: int
    """How many leading hashes of the chain were matched (1 = only the first)."""


class PrefixIndex:
    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"a prefix index needs room for at least one entry, got max_entries={max_entries}")
        self.max_entries = max_entries
        self._owners: OrderedDict[int, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._owners)

    def owner(self, prefix_hash: int) -> str | None:
        """The replica that last took the prefix `prefix_hash`, or None."""
        return self._owners.get(prefix_hash)

    def deepest(self, chain: Sequence[int], allowed: Collection[str]) -> PrefixMatch | None:
        """The longest prefix of `chain` last taken by a replica in `allowed`, or None."""
        owners = self._owners
        for depth in range(len(chain), 0, -1):
            replica_id = owners.get(chain[depth - 1])
            if replica_id is not None and replica_id in allowed:
                return PrefixMatch(replica_id, depth)
        return None

    def record(self, chain: Sequence[int], replica_id: str) -> None:
        """Every prefix of `chain` was just sent to `replica_id`; forget the least recent beyond the bound."""
        owners = self._owners
        for prefix_hash in chain[-self.max_entries:]:  # a chain longer than the index keeps its deep end
            owners[prefix_hash] = replica_id
            owners.move_to_end(prefix_hash)
        while len(owners) > self.max_entries:
            owners.popitem(last=False)
