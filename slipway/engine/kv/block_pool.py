"""The block pool: reference counts, the LRU free queue, and the hash -> block map.

Pure bookkeeping over block ids 0..num_blocks-1; the tensors live in the model runner. The
pool does not know sequences; `KVCacheManager` does. See `base.py` for the states a block
moves through.

The hash -> block map is kept in recency order, least recently used first: registering a block
(`cache`), adopting it (`acquire`) and releasing it (`release`) make it the most recent. Within
one call the *first* block of a table ends most recent (`acquire` takes a table head first and
touches it tail first; `release` is given tails first), so a summary cut at any length keeps
whole prefixes rather than their tails. `recent_cached_hashes` is the one method safe to call
from another thread (a replica's /stats): a lock guards the map against it, taken once per call.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from itertools import islice
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
        # Cached blocks by hash, least recently used first (see the module docstring).
        self._cached: OrderedDict[int, int] = OrderedDict()
        self._cached_lock = threading.Lock()

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
        """Hashes of the cached blocks, least recently used first (engine thread only)."""
        return iter(self._cached)

    def recent_cached_hashes(self, limit: int) -> list[int]:
        """Up to `limit` hashes of cached blocks, most recently used first; safe from any thread."""
        with self._cached_lock:
            return list(islice(reversed(self._cached), limit))

    # -- changes ---------------------------------------------------------------------------

    def allocate(self, count: int) -> list[int] | None:
        """Take `count` free blocks (ref 1, hash dropped), LRU first; None if too few are free."""
        if count > len(self._free):
            return None
        taken = []
        if count:
            with self._cached_lock:
                for _ in range(count):
                    block_id, _ = self._free.popitem(last=False)
                    self._forget_hash(block_id)
                    self.ref_counts[block_id] = 1
                    taken.append(block_id)
        return taken

    def acquire(self, block_ids: Iterable[int]) -> None:
        """Add a reference to each block, taking it off the free queue if it was free."""
        block_ids = list(block_ids)
        for block_id in block_ids:
            if self.ref_counts[block_id] == 0:
                del self._free[block_id]
            self.ref_counts[block_id] += 1
        self._touch(reversed(block_ids))

    def release(self, block_ids: Iterable[int]) -> None:
        """Drop a reference from each block; those that reach zero join the free queue in order."""
        block_ids = list(block_ids)
        for block_id in block_ids:
            if self.ref_counts[block_id] <= 0:
                raise RuntimeError(f"block {block_id} released more often than acquired")
            self.ref_counts[block_id] -= 1
            if self.ref_counts[block_id] == 0:
                self._free[block_id] = None
        self._touch(block_ids)

    def cache(self, block_id: int, block_hash: int) -> bool:
        """Register a full, computed block under its hash; False if another block holds it already."""
        if block_hash in self._cached or self.block_hashes[block_id] is not None:
            return False
        with self._cached_lock:
            self._cached[block_hash] = block_id
        self.block_hashes[block_id] = block_hash
        return True

    def _touch(self, block_ids: Iterable[int]) -> None:
        """Make the cached ones of `block_ids` the most recently used, the last one most of all."""
        hashes = [h for h in map(self.block_hashes.__getitem__, block_ids) if h is not None]
        if hashes:
            with self._cached_lock:
                for block_hash in hashes:
                    self._cached.move_to_end(block_hash)

    def _forget_hash(self, block_id: int) -> None:
        block_hash = self.block_hashes[block_id]
        if block_hash is not None:
            del self._cached[block_hash]
            self.block_hashes[block_id] = None
