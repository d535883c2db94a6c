"""What every repository shares: how it gets a connection, and how ids are made."""

from __future__ import annotations

import secrets
from contextlib import AbstractContextManager
from typing import Callable

from sqlalchemy import Connection

ConnectionScope = Callable[[], AbstractContextManager[Connection]]


def new_id(prefix: str, nbytes: int = 6) -> str:
    """A random id like 'dep-3f9a1c2b' (`nbytes` random bytes, hex)."""
    return f"{prefix}-{secrets.token_hex(nbytes)}"


class Repository:
    """A repository runs each method inside `scope()`: its own transaction, or a shared one."""

    def __init__(self, scope: ConnectionScope) -> None:
        self._scope = scope
