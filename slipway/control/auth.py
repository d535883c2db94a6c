"""Who is calling: API keys from request headers, checked against the store, cached briefly.

A key arrives as `Authorization: Bearer <key>` or `Api-Key: <key>`. Lookups are cached for a
couple of seconds (bounded), because every management call needs one; revoking a key through
the control plane drops it from the cache, so a revoked key is refused at once.

The dashboard calls /api/v1 with a session cookie instead of a key (`dashboard_principal`): only
when the request also carries the dashboard's own header, which a page of another origin cannot
send without a CORS preflight this API never grants; a request with a key header is always
judged by its key.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Mapping

from starlette.requests import Request

from slipway.errors import AuthError, PermissionDeniedError
from slipway.spec.snapshot import SCOPE_ADMIN, SCOPE_INVOKE, SCOPE_METRICS
from slipway.store import KeyRow, Store, hash_key

SCOPES = (SCOPE_ADMIN, SCOPE_INVOKE, SCOPE_METRICS)

# The dashboard's session cookie, and the header its scripts send with every API call.
SESSION_COOKIE = "slipway_session"
DASHBOARD_HEADER = "x-slipway-dashboard"
# Where a session cookie stands in for a key.
SESSION_PATH_PREFIX = "/api/v1/"


@dataclass(frozen=True)
class Principal:
    """The caller: a key, its workspace and what it may do."""

    key_id: str
    workspace_id: str
    scopes: frozenset[str]
    models: tuple[str, ...] | None

    def require(self, *any_of: str, action: str = "this") -> None:
        """Raise `PermissionDeniedError` unless the key has one of the scopes `any_of`."""
        if not self.scopes.intersection(any_of):
            needed = " or ".join(repr(s) for s in any_of)
            raise PermissionDeniedError(
                f"key {self.key_id} lacks the {needed} scope needed for {action}; use a key that has it "
                "(slipway keys create --scope ...)"
            )


def key_from_headers(headers: Mapping[str, str]) -> str:
    """The API key a request carries; `AuthError` if there is none."""
    authorization = headers.get("authorization", "").strip()
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() in ("bearer", "api-key") and value.strip():
        return value.strip()
    api_key = headers.get("api-key", "").strip()
    if api_key:
        return api_key
    raise AuthError("missing API key: send 'Authorization: Bearer sk-slw-...' or 'Api-Key: sk-slw-...'")


class KeyAuthenticator:
    """Turns a key secret into a `Principal`, with a small time-limited cache in front of the store."""

    def __init__(self, store: Store, *, ttl_seconds: float = 2.0, max_entries: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[float, KeyRow | None]] = OrderedDict()
        # Bumped by forget(): a lookup that raced a revoke must not cache what it read before it.
        self._generation = 0

    def authenticate(self, secret: str) -> Principal:
        row = self._lookup(hash_key(secret))
        if row is None:
            raise AuthError("invalid API key; check it, or create one with `slipway keys create`")
        if row.revoked_at is not None:
            raise AuthError(f"API key {row.id} was revoked; create a new one with `slipway keys create`")
        return Principal(key_id=row.id, workspace_id=row.workspace_id, scopes=frozenset(row.scopes),
                         models=row.models)

    def forget(self, key_id: str) -> None:
        """Drop cached lookups of this key (called when it is revoked)."""
        with self._lock:
            self._generation += 1
            for digest in [d for d, (_, row) in self._cache.items() if row is not None and row.id == key_id]:
                del self._cache[digest]

    def _lookup(self, digest: str) -> KeyRow | None:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(digest)
            if cached is not None and cached[0] > now:
                self._cache.move_to_end(digest)
                return cached[1]
            generation = self._generation
        row = self._store.keys.get_by_hash(digest)
        with self._lock:
            if self._ttl > 0 and generation == self._generation:
                self._cache[digest] = (now + self._ttl, row)
                self._cache.move_to_end(digest)
                while len(self._cache) > self._max_entries:
                    self._cache.popitem(last=False)
        return row


SessionLookup = Callable[[str], "Principal | None"]


def dashboard_principal(request: Request) -> Principal | None:
    """The principal of the dashboard session this request carries, or None to use its key.

    None unless the app has a session table (`app.state.session_lookup`), the path is under
    /api/v1, the dashboard header is set and no key header is. A session cookie that is unknown,
    expired or whose key was revoked raises `AuthError`, so the dashboard knows to sign in again.
    Reads the store: call it from a worker thread.
    """
    lookup: SessionLookup | None = getattr(request.app.state, "session_lookup", None)
    headers = request.headers
    if (lookup is None or not request.url.path.startswith(SESSION_PATH_PREFIX)
            or headers.get(DASHBOARD_HEADER) != "1" or "authorization" in headers or "api-key" in headers):
        return None
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    principal = lookup(session_id)
    if principal is None:
        raise AuthError("your dashboard session has ended (expired, signed out, or its key was revoked); "
                        "sign in again with an API key")
    return principal
