"""The paged KV cache's bookkeeping (the tensors live in the model runner).

    base.py        the contract with the scheduler, PrefixHit
    hashing.py     chained block hashes, the 63-bit values replicas report
    block_pool.py  reference counts, LRU free queue, hash -> block map in recency order
    manager.py     KVCacheManager: block tables per sequence, prefix lookup and caching
"""

from slipway.engine.kv.base import NO_HIT, PrefixHit
from slipway.engine.kv.block_pool import BlockPool
from slipway.engine.kv.hashing import REPORTED_HASH_MASK, ROOT_HASH, hash_block, hash_prefix_blocks, reported_hash
from slipway.engine.kv.manager import KVCacheManager

__all__ = ["BlockPool", "KVCacheManager", "NO_HIT", "PrefixHit", "REPORTED_HASH_MASK", "ROOT_HASH", "hash_block",
           "hash_prefix_blocks", "reported_hash"]
