"""The KV cache's contract with the scheduler.

The cache is a fixed pool of blocks, each holding `block_size` tokens' keys and values in every
layer. A sequence owns an ordered *block table*; token at position p lives in block
`table[p // block_size]`. Full blocks are named by a hash chained over the whole prefix, so two
sequences that start with the same tokens can share the blocks that hold them:

    seq A tokens:  [t0 .. t15][t16 .. t31][t32 t33 _ _ ...]
                        │          │            │
    block table:      [ 7 ]      [ 2 ]        [ 9 ]          (block_size 16)
    block hash:      h7 = H(-, t0..t15)   h2 = H(h7, t16..t31)   partial: not cached

    seq B = same first 32 tokens ──► find_prefix hits h7, h2 ──► table [7, 2, new...]
                                                                  refcounts 7: 2, 2: 2

Block states, and the only moves between them:

                allocate (takes the LRU front; a cached block loses its hash)
          ┌─────────────────────────────────────────────────────────────────────┐
          │                 prefix hit on a cached free block                   ▼
    FREE (ref 0, LRU order, ───────────────────────────────────────────►  USED (ref >= 1) ◄─┐
          may still be cached)                                                  │  │       │ fork, prefix hit
          ▲                                                                     │  └───────┘ on a used block:
          └──────────── last release (joins the LRU back) ──────────────────────┘            ref + 1

A sequence with a LoRA adapter chains its first block on the adapter's own root hash instead of
0 (`Sequence.root_hash`): the same tokens under another adapter are other keys and values, so
they never share blocks; the base's hashes are unchanged.

Rules the manager keeps:
- Only full blocks whose every token has been computed are cached (`cache_full_blocks`).
- A block is never both free and used; a reference count never goes below zero.
- Free blocks are reused in least-recently-released order; a sequence releases its blocks tail
  first, so its shared prefix is the last to be evicted.
- Calls that change state: `allocate_slots`, `cache_full_blocks`, `fork`, `free`. Calls that do
  not: `find_prefix`, `block_table`, the counters, `recent_block_hashes`. A `PrefixHit` is valid
  until the next call that changes state.
- One thread drives the cache; `recent_block_hashes` (the cached-block summary a replica reports
  for routing, most recently used first) is the only call another thread may make.
- `allocate_slots` returns the new block table, or `None` ("cannot allocate") and changes
  nothing; the scheduler then preempts or waits.
"""

from __future__ import annotations

from typing import NamedTuple


class PrefixHit(NamedTuple):
    """The cached blocks that hold a prompt's longest cached prefix."""

    block_ids: tuple[int, ...]
    hashes: tuple[int, ...]
    num_tokens: int
    """Tokens those blocks hold: len(block_ids) * block_size."""


NO_HIT = PrefixHit((), (), 0)
