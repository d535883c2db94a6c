"""Prefix hashes a router can compare: KV block hash chains over tokens, chunk chains over text.

KV blocks (`block_hash_chain`), the scheme replicas must use when they report cached blocks:

    h[-1] = 0
    h[i]  = int.from_bytes(blake2b(h[i-1].to_bytes(16, "little")
                                   + tokens[i*B:(i+1)*B] as int64 little-endian,
                                   digest_size=16).digest(), "little")
    reported[i] = h[i] & (2**63 - 1)

for every full block of B = block_size tokens (a trailing partial block has no hash). The chain
runs on the full 128-bit values, exactly as the built-in engine names its cached blocks; only the
reported value is cut to 63 bits, so it fits a signed 64-bit integer in JSON, SQL and Prometheus.
A block's hash stands for the whole prefix up to its end, so a run of equal hashes from the first
block is a shared prefix.

Text chunks (`text_chunk_chain`), known only to the process that computes them: the same chaining
over the UTF-8 bytes of fixed-size character chunks, the last chunk possibly shorter, 8-byte
digests. It lets `prefix_aware` index prompts without a tokenizer.
"""

from __future__ import annotations

import sys
from array import array
from hashlib import blake2b
from typing import Sequence

HASH_MASK = (1 << 63) - 1
"""Reported block hashes keep the low 63 bits of the engine's 128-bit hash."""

ROOT_HASH = 0
"""The parent hash of a prompt's first block or chunk."""


def block_hash_chain(token_ids: Sequence[int], block_size: int, max_blocks: int | None = None) -> tuple[int, ...]:
    """The 63-bit hashes of the full `block_size`-token blocks of `token_ids`, first block first.

    `max_blocks` stops after that many blocks (the leading ones), to bound the work.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    num_blocks = len(token_ids) // block_size
    if max_blocks is not None:
        num_blocks = min(num_blocks, max_blocks)
    hashes: list[int] = []
    parent = ROOT_HASH
    for index in range(num_blocks):
        tokens = array("q", token_ids[index * block_size:(index + 1) * block_size])
        if sys.byteorder == "big":
            tokens.byteswap()
        digest = blake2b(parent.to_bytes(16, "little"), digest_size=16)
        digest.update(tokens.tobytes())
        parent = int.from_bytes(digest.digest(), "little")
        hashes.append(parent & HASH_MASK)
    return tuple(hashes)


def text_chunk_chain(text: str, chunk_chars: int, max_chars: int) -> tuple[int, ...]:
    """Chained 63-bit hashes of the leading `max_chars` characters of `text`, `chunk_chars` at a time."""
    if chunk_chars < 1:
        raise ValueError(f"chunk_chars must be at least 1, got {chunk_chars}")
    text = text[:max_chars]
    hashes: list[int] = []
    parent = ROOT_HASH
    for start in range(0, len(text), chunk_chars):
        digest = blake2b(parent.to_bytes(8, "little"), digest_size=8)
        digest.update(text[start:start + chunk_chars].encode("utf-8", "surrogatepass"))
        parent = int.from_bytes(digest.digest(), "little") & HASH_MASK
        hashes.append(parent)
    return tuple(hashes)
