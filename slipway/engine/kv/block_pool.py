"""The block pool: reference counts, the LRU free queue, and the hash -> block map.

Pure bookkeeping over block ids 0..num_blocks-1; the tensors live in the model runner. The
pool does not know sequences; `KVCacheManager` does. See `base.py` for the states a block
moves through.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, Iterator


class BlockPool:
    """Fixed set of blocks; see the module docstring."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be at least 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self.ref_counts = [0] * num_blocks
        self.block_hashes: list[int | None] = [None] * num_blocks
        # Free blocks, least recently released first: the front is evicted first.
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._cached: dict[int, int] = {}

    # -- queries ---------------------------------------------------------------------------

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def num_cached(self) -> int:
        return len(self._cached)

    def is_free(self, block_id: int) -> bool:
        return block_id in self._free

    def free_block_ids(self) -> Iterator[int]:
        """Free blocks in eviction order (next to be reused first)."""
        return iter(self._free)

    def cached_block(self, block_hash: int) -> int | None:
        """The block registered under `block_hash`, used or free, or None."""
        return self._cached.get(block_hash)

    def cached_hashes(self) -> Iterator[int]:
        return iter(self._cached)

    # -- changes ---------------------------------------------------------------------------

    def allocate(self, count: int) -> list[int] | None:
        """Take `count` free blocks (ref 1, hash dropped), LRU first; None if too few are free."""
        if count > len(self._free):
            return None
        taken = []
        for _ in range(count):
            block_id, _ = self._free.popitem(last=False)
            self._forget_hash(block_id)
            self.ref_counts[block_id] = 1
            taken.append(block_id)
        return taken

    def acquire(self, block_ids: Iterable[int]) -> None:
        """Add a reference to each block, taking it off the free queue if it was free."""
        for block_id in block_ids:
            if self.ref_counts[block_id] == 0:
                del self._free[block_id]
            self.ref_counts[block_id] += 1

    def release(self, block_ids: Iterable[int]) -> None:
        """Drop a reference from each block; those that reach zero join the free queue in order."""
        for block_id in block_ids:
            if self.ref_counts[block_id] <= 0:
                raise RuntimeError(f"block {block_id} released more often than acquired")
            self.ref_counts[block_id] -= 1
            if self.ref_counts[block_id] == 0:
                self._free[block_id] = None

    def cache(self, block_id: int, block_hash: int) -> bool:
        """Register a full, computed block under its hash; False if another block holds it already."""
        if block_hash in self._cached or self.block_hashes[block_id] is not None:
            return False
        self._cached[block_hash] = block_id
        self.block_hashes[block_id] = block_hash
        return True

    def _forget_hash(self, block_id: int) -> None:
        block_hash = self.block_hashes[block_id]
        if block_hash is not None:
            del self._cached[block_hash]
            self.block_hashes[block_id] = None
