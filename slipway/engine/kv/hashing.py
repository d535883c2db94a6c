"""Block hashes: a full block is named by its tokens and its parent's hash.

The chain makes a block's hash stand for the whole prefix up to its end, so equal hashes mean
equal prefixes (up to a 128-bit collision). blake2b over the token bytes keeps hashes the same
across processes and Python versions, so other processes (routers) can compute them too.
"""

from __future__ import annotations

import hashlib
from array import array
from typing import Sequence

ROOT_HASH = 0
"""The parent hash of a sequence's first block."""


def hash_block(parent_hash: int, token_ids: Sequence[int]) -> int:
    """The hash of a full block of `token_ids` that follows the block hashed `parent_hash`."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(parent_hash.to_bytes(16, "little"))
    digest.update(array("q", token_ids).tobytes())
    return int.from_bytes(digest.digest(), "little")


def hash_prefix_blocks(token_ids: Sequence[int], block_size: int) -> list[int]:
    """Hashes of every full block of `token_ids`, in order."""
    hashes: list[int] = []
    parent = ROOT_HASH
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = hash_block(parent, token_ids[start:start + block_size])
        hashes.append(parent)
    return hashes
