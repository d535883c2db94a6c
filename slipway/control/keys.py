"""Keys and workspaces: creating keys (secret shown once), revoking them, and the first admin key.

`bootstrap` runs at every start of the control plane. The first time, it creates the `default`
workspace and an admin key and saves the key to $SLIPWAY_HOME/admin.key (mode 600, written
atomically); later starts find that key still valid and reuse it.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from slipway.control.auth import SCOPES
from slipway.errors import SpecError
from slipway.spec.package import NAME_PATTERN
from slipway.spec.snapshot import SCOPE_ADMIN, SCOPE_INVOKE
from slipway.store import KeyRow, Store, WorkspaceRow, hash_key

ADMIN_KEY_FILE = "admin.key"
DEFAULT_WORKSPACE = "default"


@dataclass(frozen=True)
class CreatedKey:
    row: KeyRow
    secret: str  # returned to the caller once; only its digest is stored


def check_key_request(scopes: Sequence[str], models: Sequence[str] | None) -> tuple[list[str], list[str] | None]:
    """Validated, de-duplicated scopes and model list; `SpecError` listing every problem."""
    problems = []
    scopes = list(dict.fromkeys(scopes))
    if not scopes:
        problems.append(f"scopes: give at least one of {', '.join(SCOPES)}")
    problems += [f"scopes: {s!r} is not a scope; use {', '.join(SCOPES)}" for s in scopes if s not in SCOPES]
    if models is not None:
        models = list(dict.fromkeys(models))
        if SCOPE_INVOKE not in scopes or SCOPE_ADMIN in scopes:
            problems.append("models: limits an invoke key to some models; it applies only to keys with the "
                            "'invoke' scope and without 'admin' (admin keys may call every model)")
        if not models:
            problems.append("models: give at least one model name, or leave it out to allow every model")
        problems += [f"models: {m!r} is not a model name" for m in models if not re.match(NAME_PATTERN, m)]
    if problems:
        raise SpecError("invalid key request", problems, code="invalid_request")
    return scopes, models


def create_key(store: Store, workspace_id: str, *, name: str, scopes: Sequence[str],
               models: Sequence[str] | None, now: float) -> CreatedKey:
    scopes, models = check_key_request(scopes, models)
    with store.transaction() as tx:
        row, secret = tx.keys.create(workspace_id, name=name, scopes=scopes, models=models, now=now)
        tx.state.bump()
    return CreatedKey(row=row, secret=secret)


def create_workspace(store: Store, name: str, now: float) -> tuple[WorkspaceRow, CreatedKey]:
    """A new workspace and its first admin key, in one transaction."""
    if not re.match(NAME_PATTERN, name):
        raise SpecError(f"workspace name {name!r} is not valid; use lowercase letters, digits and dashes "
                        "(at most 63)", code="invalid_request")
    with store.transaction() as tx:
        workspace = tx.workspaces.create(name, now)
        row, secret = tx.keys.create(workspace.id, name="admin", scopes=[SCOPE_ADMIN], models=None, now=now)
        tx.state.bump()
    return workspace, CreatedKey(row=row, secret=secret)


def bootstrap(store: Store, home: Path, now: float) -> tuple[WorkspaceRow, str | None]:
    """The default workspace and a working admin key in home/admin.key; returns the secret only if new."""
    path = Path(home) / ADMIN_KEY_FILE
    workspace = store.workspaces.get_by_name(DEFAULT_WORKSPACE)
    if workspace is not None:
        saved = _read_key(path)
        row = store.keys.get_by_hash(hash_key(saved)) if saved else None
        if row is not None and row.active and row.workspace_id == workspace.id and SCOPE_ADMIN in row.scopes:
            return workspace, None
        created = create_key(store, workspace.id, name="admin", scopes=[SCOPE_ADMIN], models=None, now=now)
    else:
        workspace, created = create_workspace(store, DEFAULT_WORKSPACE, now)
    write_secret_file(path, created.secret)
    return workspace, created.secret


def write_secret_file(path: Path, secret: str) -> None:
    """Write `secret` to `path` readable by the owner only; readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secret + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _read_key(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
