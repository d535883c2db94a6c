from slipway.engine.kv import ROOT_HASH, hash_block, hash_prefix_blocks


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
