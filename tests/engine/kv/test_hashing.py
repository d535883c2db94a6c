import hashlib

from slipway.engine.kv import REPORTED_HASH_MASK, ROOT_HASH, hash_block, hash_prefix_blocks, reported_hash
from slipway.routing import HASH_MASK, block_hash_chain


def test_hash_covers_parent_and_tokens():
    a = hash_block(ROOT_HASH, [1, 2, 3, 4])
    assert a == hash_block(ROOT_HASH, [1, 2, 3, 4])
    assert a != hash_block(ROOT_HASH, [1, 2, 3, 5])
    assert hash_block(a, [5, 6, 7, 8]) != hash_block(ROOT_HASH, [5, 6, 7, 8])


def test_hashes_are_stable_across_processes():
    # blake2b over little-endian bytes: a fixed value, so routers in other processes agree.
    assert hash_block(ROOT_HASH, (1, 2, 3, 4)) == 0xF3F404E3E0EDB87B54A9BA8CC7F77770


def test_prefix_blocks_chain_full_blocks_only():
    hashes = hash_prefix_blocks(list(range(10)), 4)
    assert len(hashes) == 2
    assert hashes[1] == hash_block(hashes[0], [4, 5, 6, 7])


def test_the_bytes_hashed_are_little_endian_int64_on_every_machine():
    payload = (0).to_bytes(16, "little") + b"".join(t.to_bytes(8, "little", signed=True) for t in (7, -1, 300))
    expected = int.from_bytes(hashlib.blake2b(payload, digest_size=16).digest(), "little")
    assert hash_block(ROOT_HASH, [7, -1, 300]) == expected


def test_reported_hashes_are_the_routers_block_hash_chain():
    assert REPORTED_HASH_MASK == HASH_MASK
    token_ids = list(range(1000, 1037))
    assert [reported_hash(h) for h in hash_prefix_blocks(token_ids, 8)] == list(block_hash_chain(token_ids, 8))
