"""Snapshot sources for a gateway: a fixed one you can replace, and a long poll of a control plane.

    StaticSnapshotSource(snapshot)               tests and benchmarks; `publish()` swaps it (any thread)
    HttpSnapshotSource(control_url, admin_key)   GET /internal/snapshot?after=N&timeout=S on a control
                                                 plane; keeps the last good snapshot while it is down
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp

from slipway.spec.snapshot import RoutingSnapshot, SnapshotBoard

log = logging.getLogger(__name__)


class StaticSnapshotSource(SnapshotBoard):
    """A snapshot held in memory; `publish` replaces it whatever its version and wakes every waiter."""

    def publish(self, snapshot: RoutingSnapshot, *, only_newer: bool = False) -> bool:
        return super().publish(snapshot, only_newer=only_newer)


class HttpSnapshotSource:
    """Long-polls a control plane for snapshots; serves the last good one when it cannot reach it."""

    def __init__(self, control_url: str, admin_key: str, *, retry_delay: float = 1.0,
                 max_retry_delay: float = 10.0) -> None:
        self._url = control_url.rstrip("/") + "/internal/snapshot"
        self._headers = {"Authorization": f"Bearer {admin_key}"}
        # Version -1: the first poll returns whatever the control plane has, at once.
        self._current = RoutingSnapshot(version=-1)
        self._session: aiohttp.ClientSession | None = None
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._failures = 0
        self._last_warning = 0.0

    def current(self) -> RoutingSnapshot:
        return self._current

    async def wait_newer(self, after_version: int, timeout: float) -> RoutingSnapshot:
        if self._current.version > after_version:
            return self._current
        try:
            fetched = await self._fetch(after_version, timeout)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            self._failures += 1
            self._warn(f"cannot fetch the routing snapshot from {self._url} ({type(exc).__name__}: {exc}); "
                       f"serving version {self._current.version} until it answers")
            delay = min(self._retry_delay * 2 ** min(self._failures - 1, 8), self._max_retry_delay, timeout)
            await asyncio.sleep(delay)
            return self._current
        self._failures = 0
        if fetched.version > self._current.version:
            self._current = fetched
        return self._current

    async def _fetch(self, after_version: int, timeout: float) -> RoutingSnapshot:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers)
        params = {"after": str(after_version), "timeout": str(timeout)}
        client_timeout = aiohttp.ClientTimeout(total=timeout + 10.0, sock_connect=5.0)
        async with self._session.get(self._url, params=params, timeout=client_timeout) as response:
            body = await response.read()
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}: {body[:200]!r}")
        return RoutingSnapshot.model_validate_json(body)

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 30.0:  # once per half minute, not once per retry
            self._last_warning = now
            log.warning(message)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
