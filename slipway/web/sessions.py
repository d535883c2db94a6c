"""Dashboard sessions: an opaque random id in a cookie, mapped in memory to the key's principal.

The key itself never leaves the sign-in request: the browser holds only the session id, and the
server holds `session id -> (principal, expiry)` in a bounded, least-recently-used table. Each
use checks the key again in the store, so revoking the key ends its sessions at once. Sessions
live in one process's memory: restarting `slipway up` signs everybody out, which is the point.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from pydantic import BaseModel, Field

from slipway.control.auth import Principal
from slipway.store import Store


class SessionConfig(BaseModel):
    """How long dashboard sessions last and how many are kept."""

    idle_timeout_seconds: float = Field(
        8 * 3600, gt=0, description="A session unused this long is forgotten; the user signs in again.")
    max_age_seconds: float = Field(
        24 * 3600, gt=0, description="A session older than this is forgotten however busy it is.")
    max_sessions: int = Field(
        1000, ge=1, description="Most sessions held; signing in past it forgets the least recently used.")


@dataclass
class _Session:
    principal: Principal
    created_at: float
    last_used_at: float


class DashboardSessions:
    """The in-memory session table. Thread-safe; time comes from `clock` so tests can move it."""

    def __init__(self, store: Store, config: SessionConfig | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self.config = config or SessionConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, principal: Principal) -> str:
        """A new session for `principal`; returns its id (43 URL-safe characters, 256 random bits)."""
        session_id = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            self._sessions[session_id] = _Session(principal, created_at=now, last_used_at=now)
            while len(self._sessions) > self.config.max_sessions:
                self._sessions.popitem(last=False)
        return session_id

    def close(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def principal(self, session_id: str) -> Principal | None:
        """The session's principal, or None when it is unknown, expired, or its key was revoked.

        Reads the store (the revocation check): call it from a worker thread.
        """
        session = self._touch(session_id)
        if session is None:
            return None
        key = self._store.keys.get(session.principal.workspace_id, session.principal.key_id)
        if key is None or key.revoked_at is not None:
            self.close(session_id)
            return None
        return session.principal

    def _touch(self, session_id: str) -> _Session | None:
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if (now - session.last_used_at > self.config.idle_timeout_seconds
                    or now - session.created_at > self.config.max_age_seconds):
                del self._sessions[session_id]
                return None
            session.last_used_at = now
            self._sessions.move_to_end(session_id)
            return session
