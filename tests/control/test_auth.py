"""Keys from headers, checked against the store with a short cache that a revoke clears."""

from __future__ import annotations

import pytest

from slipway.control.auth import KeyAuthenticator, key_from_headers
from slipway.errors import AuthError, PermissionDeniedError


@pytest.mark.parametrize("headers", [
    {"authorization": "Bearer sk-slw-abc"}, {"authorization": "bearer  sk-slw-abc "},
    {"api-key": "sk-slw-abc"}, {"authorization": "Api-Key sk-slw-abc"},
])
def test_key_is_read_from_either_header(headers):
    assert key_from_headers(headers) == "sk-slw-abc"


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer "}, {"authorization": "Basic abc"}])
def test_missing_key_says_how_to_send_one(headers):
    with pytest.raises(AuthError, match="Authorization: Bearer"):
        key_from_headers(headers)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys(store, workspace):
    invoke, secret = store.keys.create(workspace.id, name="", scopes=["invoke"], models=["echo"], now=1.0)
    return invoke, secret


def test_principal_carries_workspace_scopes_and_models(store, keys):
    row, secret = keys
    principal = KeyAuthenticator(store).authenticate(secret)
    assert (principal.key_id, principal.workspace_id, principal.models) == (row.id, row.workspace_id, ("echo",))
    principal.require("invoke", "admin")
    with pytest.raises(PermissionDeniedError, match="lacks the 'admin' scope"):
        principal.require("admin", action="deploying")


def test_unknown_key_is_refused(store):
    with pytest.raises(AuthError, match="invalid API key"):
        KeyAuthenticator(store).authenticate("sk-slw-unknown")


def test_cache_serves_repeat_lookups_until_it_expires(store, keys, workspace):
    row, secret = keys
    clock = Clock()
    auth = KeyAuthenticator(store, ttl_seconds=2.0, clock=clock)
    auth.authenticate(secret)
    store.keys.revoke(workspace.id, row.id, now=2.0)      # behind the cache's back
    auth.authenticate(secret)                              # still cached
    clock.now = 2.5
    with pytest.raises(AuthError, match="was revoked"):
        auth.authenticate(secret)


def test_forget_makes_a_revoke_take_effect_at_once(store, keys, workspace):
    row, secret = keys
    auth = KeyAuthenticator(store, ttl_seconds=60.0)
    auth.authenticate(secret)
    store.keys.revoke(workspace.id, row.id, now=2.0)
    auth.forget(row.id)
    with pytest.raises(AuthError, match="was revoked"):
        auth.authenticate(secret)


def test_cache_is_bounded(store, workspace):
    auth = KeyAuthenticator(store, max_entries=3)
    for i in range(10):
        with pytest.raises(AuthError):
            auth.authenticate(f"sk-slw-missing-{i}")
    assert len(auth._cache) == 3
