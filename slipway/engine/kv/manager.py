"""The KV cache manager: block tables per sequence over one `BlockPool`, with prefix caching.

This is the narrow interface the scheduler and engine use; `base.py` states its contract.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from slipway.engine.kv.base import NO_HIT, PrefixHit
from slipway.engine.kv.block_pool import BlockPool
from slipway.engine.kv.hashing import ROOT_HASH, hash_block, reported_hash


class KVCacheManager:
    """Block tables for sequences (by id), prefix lookup and caching; see `base.py`."""

    def __init__(self, num_blocks: int, block_size: int, *, enable_prefix_caching: bool = True) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}")
        self.pool = BlockPool(num_blocks)
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._tables: dict[int, list[int]] = {}
        # Hashes of each sequence's cached full blocks, in order: the chain to extend.
        self._hashes: dict[int, list[int]] = {}

    # -- queries ---------------------------------------------------------------------------

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free

    @property
    def num_used_blocks(self) -> int:
        return self.pool.num_used

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def block_table(self, seq_id: int) -> list[int]:
        return self._tables.get(seq_id, [])

    def has(self, seq_id: int) -> bool:
        return seq_id in self._tables

    def cached_hashes(self) -> Iterator[int]:
        return self.pool.cached_hashes()

    def recent_block_hashes(self, limit: int) -> list[int]:
        """The reported (63-bit, see `hashing.reported_hash`) hashes of up to `limit` cached blocks,
        most recently used first: the summary a replica gives routers. Safe from any thread;
        O(limit), whatever the size of the cache."""
        if limit <= 0:
            return []
        return [reported_hash(block_hash) for block_hash in self.pool.recent_cached_hashes(limit)]

    def find_prefix(self, token_ids: Sequence[int], root_hash: int = ROOT_HASH) -> PrefixHit:
        """The longest cached run of full blocks that starts `token_ids`, chained on `root_hash`
        (the sequence's: see `Sequence.root_hash`).

        Stops one token short of the end: the last token is always computed, since its logits
        are what the next token is sampled from.
        """
        if not self.enable_prefix_caching:
            return NO_HIT
        block_ids: list[int] = []
        hashes: list[int] = []
        parent = root_hash
        max_blocks = (len(token_ids) - 1) // self.block_size
        for index in range(max_blocks):
            start = index * self.block_size
            parent = hash_block(parent, token_ids[start:start + self.block_size])
            block_id = self.pool.cached_block(parent)
            if block_id is None:
                break
            block_ids.append(block_id)
            hashes.append(parent)
        return PrefixHit(tuple(block_ids), tuple(hashes), len(block_ids) * self.block_size)

    # -- changes ---------------------------------------------------------------------------

    def allocate_slots(self, seq_id: int, num_tokens: int, prefix: PrefixHit = NO_HIT) -> list[int] | None:
        """Grow `seq_id`'s table to hold `num_tokens` tokens in all; None changes nothing.

        On a sequence's first call, `prefix` (from `find_prefix` just before) is adopted: its
        blocks are shared, not allocated.
        """
        table = self._tables.get(seq_id)
        if table is not None and prefix.block_ids:
            raise ValueError(f"sequence {seq_id} already has blocks; a prefix hit applies to its first allocation only")
        current = len(table) if table is not None else len(prefix.block_ids)
        needed = max(0, self.blocks_for(num_tokens) - current)
        # Hit blocks that sit free count against the free blocks: adopting them takes them off.
        free_hits = sum(1 for block_id in prefix.block_ids if self.pool.ref_counts[block_id] == 0)
        if needed > self.pool.num_free - free_hits:
            return None
        if table is None:
            self.pool.acquire(prefix.block_ids)
            table = self._tables[seq_id] = list(prefix.block_ids)
            self._hashes[seq_id] = list(prefix.hashes)
        new_blocks = self.pool.allocate(needed)
        assert new_blocks is not None  # checked above
        table.extend(new_blocks)
        return table

    def cache_full_blocks(self, seq_id: int, token_ids: Sequence[int], num_computed_tokens: int,
                          root_hash: int = ROOT_HASH) -> None:
        """Register every block of `seq_id` that is now full of computed tokens under its hash
        (the chain starts at `root_hash`, as in `find_prefix`)."""
        if not self.enable_prefix_caching:
            return
        table = self._tables[seq_id]
        hashes = self._hashes[seq_id]
        num_full = min(num_computed_tokens // self.block_size, len(table))
        for index in range(len(hashes), num_full):
            start = index * self.block_size
            parent = hashes[-1] if hashes else root_hash
            block_hash = hash_block(parent, token_ids[start:start + self.block_size])
            hashes.append(block_hash)
            self.pool.cache(table[index], block_hash)

    def fork(self, parent_id: int, child_id: int, num_tokens: int) -> list[int]:
        """Give `child_id` shared references to the parent's blocks that hold its first `num_tokens`.

        `num_tokens` must be a multiple of block_size: only full blocks are shared, so neither
        sequence ever writes into a block the other reads.
        """
        if num_tokens % self.block_size:
            raise ValueError(f"fork shares whole blocks; {num_tokens} is not a multiple of {self.block_size}")
        if child_id in self._tables:
            raise ValueError(f"sequence {child_id} already has blocks")
        shared = self._tables[parent_id][: num_tokens // self.block_size]
        self.pool.acquire(shared)
        self._tables[child_id] = list(shared)
        self._hashes[child_id] = self._hashes.get(parent_id, [])[: len(shared)]
        return self._tables[child_id]

    def free(self, seq_id: int) -> None:
        """Release all of `seq_id`'s blocks, tail first so shared prefixes are evicted last."""
        table = self._tables.pop(seq_id, None)
        self._hashes.pop(seq_id, None)
        if table:
            self.pool.release(reversed(table))
