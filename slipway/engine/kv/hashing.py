"""Block hashes: a full block is named by its tokens and its parent's hash.

The chain makes a block's hash stand for the whole prefix up to its end, so equal hashes mean
equal prefixes (up to a 128-bit collision). blake2b over the token ids as little-endian int64
keeps hashes the same across processes, machines and Python versions, so other processes
(routers) can compute them too:

    h[-1] = 0
    h[i]  = int.from_bytes(blake2b(h[i-1].to_bytes(16, "little")
                                   + tokens[i*B:(i+1)*B] as int64 little-endian,
                                   digest_size=16).digest(), "little")

What a replica reports (`/stats` `cached_block_hashes`) is `reported_hash(h) = h & (2**63 - 1)`,
the scheme of `slipway.routing.hashing.block_hash_chain`; the engine chains on the full 128 bits.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from typing import Sequence

ROOT_HASH = 0
"""The parent hash of a sequence's first block (of the base model's: a sequence with a LoRA
adapter chains on the adapter's own root, so adapters never share blocks)."""

REPORTED_HASH_MASK = (1 << 63) - 1
"""Reported hashes keep the low 63 bits, so they fit a signed 64-bit integer in JSON, SQL and
Prometheus; the same mask as `slipway.routing.hashing.HASH_MASK` (the engine may not import routing)."""

_BIG_ENDIAN = sys.byteorder == "big"


def hash_block(parent_hash: int, token_ids: Sequence[int]) -> int:
    """The hash of a full block of `token_ids` that follows the block hashed `parent_hash`."""
    tokens = array("q", token_ids)
    if _BIG_ENDIAN:  # the bytes hashed are little-endian on every machine
        tokens.byteswap()
    digest = hashlib.blake2b(digest_size=16)
    digest.update(parent_hash.to_bytes(16, "little"))
    digest.update(tokens.tobytes())
    return int.from_bytes(digest.digest(), "little")


def hash_prefix_blocks(token_ids: Sequence[int], block_size: int, root_hash: int = ROOT_HASH) -> list[int]:
    """Hashes of every full block of `token_ids`, in order, the first one chained on `root_hash`."""
    hashes: list[int] = []
    parent = root_hash
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = hash_block(parent, token_ids[start:start + block_size])
        hashes.append(parent)
    return hashes


def reported_hash(block_hash: int) -> int:
    """The 63-bit value a replica reports for a block hashed `block_hash`."""
    return block_hash & REPORTED_HASH_MASK
