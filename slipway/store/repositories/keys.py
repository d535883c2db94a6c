"""API keys: only a sha256 digest of the secret is stored; the secret is returned once, at creation.

A secret is `sk-slw-` followed by 40 random URL-safe characters; its first 12 characters are
kept as `prefix` so people can tell their keys apart in listings.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Sequence

from sqlalchemy import insert, select, update

from slipway.store.repositories.base import Repository, new_id
from slipway.store.rows import KeyRow
from slipway.store.tables import api_keys

KEY_PREFIX = "sk-slw-"
DISPLAY_PREFIX_LENGTH = 12


def generate_secret() -> str:
    """A new key secret: 'sk-slw-' + 40 random URL-safe characters."""
    return KEY_PREFIX + secrets.token_urlsafe(30)


def hash_key(secret: str) -> str:
    """The sha256 hex digest a key is stored and looked up by."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _row(r) -> KeyRow:
    return KeyRow(id=r.id, workspace_id=r.workspace_id, name=r.name, prefix=r.prefix, key_hash=r.key_hash,
                  scopes=tuple(r.scopes), models=tuple(r.models) if r.models is not None else None,
                  created_at=r.created_at, revoked_at=r.revoked_at)


class KeyRepository(Repository):
    def create(self, workspace_id: str, *, name: str, scopes: Sequence[str], models: Sequence[str] | None,
               now: float) -> tuple[KeyRow, str]:
        """Store a new key; returns the row and the secret (which is not kept anywhere)."""
        secret = generate_secret()
        row = KeyRow(id=new_id("key"), workspace_id=workspace_id, name=name,
                     prefix=secret[:DISPLAY_PREFIX_LENGTH], key_hash=hash_key(secret),
                     scopes=tuple(scopes), models=tuple(models) if models is not None else None,
                     created_at=now, revoked_at=None)
        with self._scope() as conn:
            conn.execute(insert(api_keys).values(
                id=row.id, workspace_id=workspace_id, name=name, prefix=row.prefix, key_hash=row.key_hash,
                scopes=list(row.scopes), models=list(row.models) if row.models is not None else None,
                created_at=now, revoked_at=None,
            ))
        return row, secret

    def get_by_hash(self, key_hash: str) -> KeyRow | None:
        """The key with this digest, revoked or not (the caller decides what revoked means)."""
        with self._scope() as conn:
            r = conn.execute(select(api_keys).where(api_keys.c.key_hash == key_hash)).first()
        return _row(r) if r else None

    def get(self, workspace_id: str, key_id: str) -> KeyRow | None:
        with self._scope() as conn:
            r = conn.execute(select(api_keys).where(
                api_keys.c.id == key_id, api_keys.c.workspace_id == workspace_id)).first()
        return _row(r) if r else None

    def list(self, workspace_id: str) -> list[KeyRow]:
        with self._scope() as conn:
            rows = conn.execute(select(api_keys).where(api_keys.c.workspace_id == workspace_id)
                                .order_by(api_keys.c.created_at, api_keys.c.id)).all()
        return [_row(r) for r in rows]

    def list_active(self) -> list[KeyRow]:
        """Every key not revoked, in every workspace (for the routing snapshot)."""
        with self._scope() as conn:
            rows = conn.execute(select(api_keys).where(api_keys.c.revoked_at.is_(None))
                                .order_by(api_keys.c.created_at, api_keys.c.id)).all()
        return [_row(r) for r in rows]

    def revoke(self, workspace_id: str, key_id: str, now: float) -> KeyRow | None:
        """Revoke a key (a second revoke keeps the first time); None if the workspace has no such key."""
        with self._scope() as conn:
            conn.execute(update(api_keys).where(
                api_keys.c.id == key_id, api_keys.c.workspace_id == workspace_id,
                api_keys.c.revoked_at.is_(None)).values(revoked_at=now))
            r = conn.execute(select(api_keys).where(
                api_keys.c.id == key_id, api_keys.c.workspace_id == workspace_id)).first()
        return _row(r) if r else None
