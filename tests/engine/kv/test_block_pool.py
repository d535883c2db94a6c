"""Properties of the block pool and manager under random sequences of operations (hypothesis)."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from slipway.engine.kv import BlockPool, KVCacheManager

BS = 2
NUM_BLOCKS = 12


class KVMachine(RuleBasedStateMachine):
    """Sequences come, grow, get computed, fork and go; the bookkeeping must stay consistent."""

    seqs = Bundle("seqs")

    def __init__(self) -> None:
        super().__init__()
        self.kv = KVCacheManager(NUM_BLOCKS, BS)
        self.tokens: dict[int, list[int]] = {}
        self.next_id = 0

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    # Tokens from a tiny alphabet so that prompts share prefixes often.
    @rule(target=seqs, prompt=st.lists(st.integers(0, 2), min_size=1, max_size=9))
    def add(self, prompt):
        seq_id = self._new_id()
        hit = self.kv.find_prefix(prompt)
        free_before = self.kv.num_free_blocks
        if self.kv.allocate_slots(seq_id, len(prompt), hit) is None:
            assert self.kv.num_free_blocks == free_before and not self.kv.has(seq_id)
            return seq_id
        self.tokens[seq_id] = list(prompt)
        self.kv.cache_full_blocks(seq_id, prompt, len(prompt))
        return seq_id

    @rule(seq_id=seqs, extra=st.lists(st.integers(0, 2), min_size=1, max_size=4))
    def grow(self, seq_id, extra):
        if seq_id not in self.tokens:
            return
        grown = self.tokens[seq_id] + extra
        if self.kv.allocate_slots(seq_id, len(grown)) is not None:
            self.tokens[seq_id] = grown
            self.kv.cache_full_blocks(seq_id, grown, len(grown))

    @rule(target=seqs, parent=seqs)
    def fork(self, parent):
        child = self._new_id()
        if parent not in self.tokens:
            return child
        shared = len(self.tokens[parent]) // BS * BS
        self.kv.fork(parent, child, shared)
        self.tokens[child] = self.tokens[parent][:shared]
        return child

    @rule(seq_id=consumes(seqs))
    def free(self, seq_id):
        self.kv.free(seq_id)
        self.tokens.pop(seq_id, None)

    @invariant()
    def refcounts_match_tables(self):
        pool = self.kv.pool
        assert all(count >= 0 for count in pool.ref_counts)
        expected = [0] * NUM_BLOCKS
        for seq_id in self.tokens:
            for block in self.kv.block_table(seq_id):
                expected[block] += 1
        assert pool.ref_counts == expected

    @invariant()
    def free_exactly_when_unreferenced(self):
        pool = self.kv.pool
        free = set(pool.free_block_ids())
        used = {b for b in range(NUM_BLOCKS) if pool.ref_counts[b] > 0}
        assert not free & used
        assert free | used == set(range(NUM_BLOCKS))

    @invariant()
    def cache_map_is_consistent(self):
        pool = self.kv.pool
        for block_hash in pool.cached_hashes():
            assert pool.block_hashes[pool.cached_block(block_hash)] == block_hash
        assert sum(h is not None for h in pool.block_hashes) == pool.num_cached

    @invariant()
    def summary_lists_every_cached_block_and_free_ones_in_reverse_eviction_order(self):
        pool = self.kv.pool
        recent = pool.recent_cached_hashes(NUM_BLOCKS)
        assert sorted(recent) == sorted(pool.cached_hashes()) and len(set(recent)) == len(recent)
        # Among free blocks the summary's order is the eviction order reversed: the first to go come last.
        free_in_summary = [h for h in recent if pool.is_free(pool.cached_block(h))]
        evicted_first = [pool.block_hashes[b] for b in pool.free_block_ids() if pool.block_hashes[b] is not None]
        assert free_in_summary == evicted_first[::-1]
        assert pool.recent_cached_hashes(2) == recent[:2]

    @invariant()
    def tables_hold_their_tokens(self):
        for seq_id, toks in self.tokens.items():
            assert len(self.kv.block_table(seq_id)) >= -(-len(toks) // BS)

    def teardown(self):
        for seq_id in list(self.tokens):
            self.kv.free(seq_id)
        assert self.kv.num_free_blocks == NUM_BLOCKS, "every block is freed when all sequences end"


KVMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_kv_bookkeeping = KVMachine.TestCase


@settings(max_examples=80, deadline=None)
@given(num_blocks=st.integers(1, 6), ops=st.lists(st.tuples(st.booleans(), st.integers(1, 3)), max_size=25))
def test_pool_reuses_blocks_in_release_order(num_blocks, ops):
    pool = BlockPool(num_blocks)
    held: list[int] = []
    for take, count in ops:
        if take:
            expected = list(pool.free_block_ids())[:count]
            got = pool.allocate(count)
            if count > len(expected):
                assert got is None
            else:
                assert got == expected, "allocation takes the least recently released first"
                held += got
        elif held:
            released, held = held[:count], held[count:]
            before = list(pool.free_block_ids())
            pool.release(released)
            assert list(pool.free_block_ids()) == before + released
    pool.release(held)
    assert pool.num_free == num_blocks


def test_release_more_than_acquired_is_an_error():
    pool = BlockPool(2)
    with pytest.raises(RuntimeError, match="released more often"):
        pool.release([0])


def test_cached_free_block_is_dropped_from_the_map_on_reuse():
    pool = BlockPool(2)
    [block] = pool.allocate(1)
    assert pool.cache(block, 123)
    pool.release([block])
    assert pool.cached_block(123) == block
    pool.allocate(2)
    assert pool.cached_block(123) is None and pool.num_cached == 0


def test_summary_is_most_recently_used_first():
    pool = BlockPool(4)
    blocks = pool.allocate(3)
    for block, block_hash in zip(blocks, (10, 11, 12)):
        pool.cache(block, block_hash)
    assert pool.recent_cached_hashes(10) == [12, 11, 10], "registration order, newest first"
    pool.release(reversed(blocks))  # tail first, as a sequence frees: its head is now the most recent
    assert pool.recent_cached_hashes(10) == [10, 11, 12]
    pool.acquire([blocks[1], blocks[2]])  # a prefix hit starting at block 1's content
    assert pool.recent_cached_hashes(10) == [11, 12, 10]
    assert pool.recent_cached_hashes(1) == [11] and pool.recent_cached_hashes(0) == []
    pool.allocate(2)  # the free uncached block, then block 0 (hash 10) is evicted
    assert pool.recent_cached_hashes(10) == [11, 12]


def test_summary_can_be_read_while_the_engine_thread_changes_the_pool():
    pool = BlockPool(64)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                assert len(pool.recent_cached_hashes(64)) <= 64
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for round_ in range(300):
            blocks = pool.allocate(16)
            for index, block in enumerate(blocks):
                pool.cache(block, round_ * 100 + index)
            pool.acquire(blocks[:8])
            pool.release(blocks[:8])
            pool.release(reversed(blocks))
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert pool.num_cached == len(pool.recent_cached_hashes(64)) > 0
