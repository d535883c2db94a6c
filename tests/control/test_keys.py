"""Key requests are validated; bootstrap creates the admin key once and saves it privately."""

from __future__ import annotations

import stat

import pytest

from slipway.control.keys import ADMIN_KEY_FILE, bootstrap, check_key_request, create_workspace
from slipway.errors import ConflictError, SpecError
from slipway.store import hash_key


def test_first_bootstrap_creates_default_workspace_and_saves_the_key(store, home):
    workspace, secret = bootstrap(store, home, now=1.0)
    assert workspace.name == "default" and secret.startswith("sk-slw-")
    path = home / ADMIN_KEY_FILE
    assert path.read_text().strip() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    row = store.keys.get_by_hash(hash_key(secret))
    assert row.scopes == ("admin",) and row.workspace_id == workspace.id
    assert [p.name for p in home.iterdir() if p.name.startswith(".admin.key")] == []


def test_later_bootstrap_reuses_the_saved_key(store, home):
    first, secret = bootstrap(store, home, now=1.0)
    again, new_secret = bootstrap(store, home, now=2.0)
    assert again == first and new_secret is None
    assert (home / ADMIN_KEY_FILE).read_text().strip() == secret
    assert len(store.keys.list(first.id)) == 1


def test_bootstrap_replaces_a_revoked_or_lost_key(store, home):
    workspace, secret = bootstrap(store, home, now=1.0)
    store.keys.revoke(workspace.id, store.keys.get_by_hash(hash_key(secret)).id, now=2.0)
    _, replacement = bootstrap(store, home, now=3.0)
    assert replacement and replacement != secret
    (home / ADMIN_KEY_FILE).unlink()
    _, another = bootstrap(store, home, now=4.0)
    assert another and (home / ADMIN_KEY_FILE).read_text().strip() == another


@pytest.mark.parametrize("scopes, models, words", [
    ([], None, "at least one"),
    (["root"], None, "'root' is not a scope"),
    (["admin"], ["echo"], "applies only to keys with the 'invoke' scope"),
    (["invoke"], [], "at least one model name"),
    (["invoke"], ["Not A Name"], "is not a model name"),
])
def test_bad_key_requests_are_refused(scopes, models, words):
    with pytest.raises(SpecError, match=words):
        check_key_request(scopes, models)


def test_good_key_request_is_deduplicated():
    assert check_key_request(["invoke", "metrics", "invoke"], ["echo", "echo"]) == (["invoke", "metrics"], ["echo"])


def test_workspace_comes_with_an_admin_key_and_names_are_unique(store):
    workspace, key = create_workspace(store, "team-b", now=1.0)
    assert key.row.workspace_id == workspace.id and key.row.scopes == ("admin",)
    with pytest.raises(ConflictError):
        create_workspace(store, "team-b", now=2.0)
    with pytest.raises(SpecError, match="not valid"):
        create_workspace(store, "Team B", now=2.0)
