"""Keys are stored as a sha256 digest only; lookup by digest; revoke is immediate and kept."""

from __future__ import annotations

import hashlib

from slipway.store import KEY_PREFIX, hash_key


def test_secret_shape_and_only_its_digest_is_stored(store, workspace):
    row, secret = store.keys.create(workspace.id, name="ci", scopes=["invoke"], models=["echo"], now=5.0)
    assert secret.startswith(KEY_PREFIX) and len(secret) == len(KEY_PREFIX) + 40
    assert row.key_hash == hashlib.sha256(secret.encode()).hexdigest() == hash_key(secret)
    assert row.prefix == secret[:12]
    with store.engine.connect() as conn:
        stored = [str(value) for r in conn.exec_driver_sql("SELECT * FROM api_keys").all() for value in r]
    assert not any(secret in value for value in stored)
    found = store.keys.get_by_hash(row.key_hash)
    assert found == row and found.scopes == ("invoke",) and found.models == ("echo",)


def test_unlimited_key_has_models_none(store, workspace):
    row, _ = store.keys.create(workspace.id, name="", scopes=["admin"], models=None, now=5.0)
    assert store.keys.get(workspace.id, row.id).models is None


def test_revoke_sets_time_once_and_drops_from_active(store, workspace):
    row, _ = store.keys.create(workspace.id, name="x", scopes=["invoke"], models=None, now=5.0)
    assert [k.id for k in store.keys.list_active()] == [row.id]
    revoked = store.keys.revoke(workspace.id, row.id, now=7.0)
    assert revoked.revoked_at == 7.0 and not revoked.active
    assert store.keys.revoke(workspace.id, row.id, now=9.0).revoked_at == 7.0
    assert store.keys.list_active() == []
    assert store.keys.get_by_hash(row.key_hash).revoked_at == 7.0


def test_keys_are_scoped_to_their_workspace(store, workspace):
    other = store.workspaces.create("team-b", 1.0)
    row, _ = store.keys.create(workspace.id, name="x", scopes=["invoke"], models=None, now=5.0)
    assert store.keys.get(other.id, row.id) is None
    assert store.keys.revoke(other.id, row.id, now=6.0) is None
    assert store.keys.get(workspace.id, row.id).active
    assert store.keys.list(other.id) == []
