"""Prefix caching, step by step, with exact block ids and eviction order."""

from __future__ import annotations

import pytest

from slipway.engine.kv import NO_HIT, KVCacheManager, hash_prefix_blocks
from slipway.routing import block_hash_chain

BS = 4


def tokens(n: int, start: int = 0) -> list[int]:
    return list(range(start, start + n))


def free_order(kv: KVCacheManager) -> list[int]:
    return list(kv.pool.free_block_ids())


def test_allocation_hit_release_and_eviction_in_exact_order():
    kv = KVCacheManager(10, BS)
    seq0 = tokens(10)
    assert kv.allocate_slots(0, 10) == [0, 1, 2]
    kv.cache_full_blocks(0, seq0, 10)
    assert kv.pool.num_cached == 2, "only the two full blocks are cached"

    hit = kv.find_prefix(tokens(8) + [99])
    assert (hit.block_ids, hit.num_tokens) == ((0, 1), 8)
    assert list(hit.hashes) == hash_prefix_blocks(seq0, BS)[:2]
    assert kv.allocate_slots(1, 9, hit) == [0, 1, 3]
    assert [kv.pool.ref_counts[b] for b in (0, 1, 2, 3)] == [2, 2, 1, 1]

    kv.free(0)  # tail first: block 2 is freed, 0 and 1 are still used by seq 1
    assert free_order(kv) == [4, 5, 6, 7, 8, 9, 2]
    kv.free(1)
    assert free_order(kv) == [4, 5, 6, 7, 8, 9, 2, 3, 1, 0]

    assert kv.allocate_slots(2, 24) == [4, 5, 6, 7, 8, 9]
    assert kv.allocate_slots(3, 8) == [2, 3]
    assert kv.find_prefix(tokens(9)).block_ids == (0, 1), "both cached blocks survive so far"
    assert kv.allocate_slots(3, 12) == [2, 3, 1], "block 1 is the least recently released"
    assert kv.pool.num_cached == 1
    assert kv.find_prefix(tokens(9)).block_ids == (0,)


def test_prefix_stops_short_of_the_last_token():
    kv = KVCacheManager(8, BS)
    kv.allocate_slots(0, 8)
    kv.cache_full_blocks(0, tokens(8), 8)
    assert kv.find_prefix(tokens(8)).block_ids == (0,)
    assert kv.find_prefix(tokens(9)).block_ids == (0, 1)


def test_hit_on_free_blocks_counts_them_against_the_free_pool():
    kv = KVCacheManager(4, BS)
    kv.allocate_slots(0, 8)
    kv.cache_full_blocks(0, tokens(8), 8)
    kv.free(0)
    assert kv.num_free_blocks == 4
    hit = kv.find_prefix(tokens(9))
    assert hit.block_ids == (1, 0) or hit.block_ids == (0, 1)
    # 4 free, 2 of them are the hit: a 5-block sequence needs 3 more than there are.
    assert kv.allocate_slots(1, 17, hit) is None
    assert kv.num_free_blocks == 4 and not kv.has(1), "a refusal changes nothing"
    assert kv.allocate_slots(1, 16, hit) == [0, 1, 2, 3]
    assert kv.num_free_blocks == 0


def test_cache_full_blocks_only_counts_computed_tokens():
    kv = KVCacheManager(8, BS)
    seq = tokens(12)
    kv.allocate_slots(0, 12)
    kv.cache_full_blocks(0, seq, 6)
    assert kv.pool.num_cached == 1
    kv.cache_full_blocks(0, seq, 12)
    assert kv.pool.num_cached == 3
    assert [kv.pool.block_hashes[b] for b in kv.block_table(0)] == hash_prefix_blocks(seq, BS)


def test_same_content_computed_twice_is_cached_once():
    kv = KVCacheManager(8, BS)
    kv.allocate_slots(0, 5)
    kv.allocate_slots(1, 5)
    kv.cache_full_blocks(0, tokens(5), 5)
    kv.cache_full_blocks(1, tokens(5), 5)
    assert kv.pool.num_cached == 1
    assert kv.find_prefix(tokens(5)).block_ids == (0,)


def test_fork_shares_full_blocks():
    kv = KVCacheManager(8, BS)
    kv.allocate_slots(0, 10)
    kv.cache_full_blocks(0, tokens(10), 10)
    assert kv.fork(0, 1, 8) == [0, 1]
    assert kv.allocate_slots(1, 11) == [0, 1, 3]
    assert kv.pool.ref_counts[:4] == [2, 2, 1, 1]
    with pytest.raises(ValueError, match="multiple of 4"):
        kv.fork(0, 2, 6)
    kv.free(0)
    kv.free(1)
    assert kv.num_used_blocks == 0


def test_caching_off_never_hits():
    kv = KVCacheManager(8, BS, enable_prefix_caching=False)
    kv.allocate_slots(0, 8)
    kv.cache_full_blocks(0, tokens(8), 8)
    assert kv.pool.num_cached == 0
    assert kv.find_prefix(tokens(9)) == NO_HIT


def test_prefix_hit_only_on_first_allocation():
    kv = KVCacheManager(8, BS)
    kv.allocate_slots(0, 8)
    kv.cache_full_blocks(0, tokens(8), 8)
    kv.allocate_slots(1, 2)
    with pytest.raises(ValueError, match="first allocation"):
        kv.allocate_slots(1, 9, kv.find_prefix(tokens(9)))


def test_recent_block_hashes_are_the_routers_chains_newest_sequence_first():
    kv = KVCacheManager(16, BS)
    first, second = tokens(13), tokens(9, start=500)
    for seq_id, seq in ((0, first), (1, second)):
        kv.allocate_slots(seq_id, len(seq))
        kv.cache_full_blocks(seq_id, seq, len(seq))
        kv.free(seq_id)
    assert kv.recent_block_hashes(16) == [*block_hash_chain(second, BS), *block_hash_chain(first, BS)]
    assert kv.recent_block_hashes(3) == [*block_hash_chain(second, BS), block_hash_chain(first, BS)[0]], \
        "a cut summary keeps whole prefixes"
    kv.allocate_slots(2, 13, kv.find_prefix(first + [7]))  # a hit makes the first prompt's blocks the newest
    assert kv.recent_block_hashes(3) == list(block_hash_chain(first, BS))
    assert kv.recent_block_hashes(0) == []


def test_no_summary_without_prefix_caching():
    kv = KVCacheManager(8, BS, enable_prefix_caching=False)
    kv.allocate_slots(0, 8)
    kv.cache_full_blocks(0, tokens(8), 8)
    assert kv.recent_block_hashes(8) == []
