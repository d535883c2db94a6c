"""What the replicas of kv_aware deployments last reported holding: their cached KV block hashes.

    poller = ReplicaStatsPoller(pool, config, tokenizers)
    poller.start(lambda: app.table.deployments.values())
    poller.cached_blocks.get("r-1")      # frozenset of 63-bit block hashes, or None: unknown

Every `replica_stats_interval` seconds, `GET /stats` of each ready replica of each deployment
whose policy needs block hashes (kv_aware), all at once, each within `replica_stats_timeout`; the
replica's `cached_block_hashes` (its most recently used KV blocks, bounded by the replica) becomes
its `ReplicaView.cached_block_hashes` through `ReplicaTracker`. Other deployments cost nothing.

A replica that misses a read keeps its last report until that is three intervals old, then is
unknown (None, not empty: the policy falls back on what it routed there itself). Replicas that
leave the snapshot, stop being ready or stop being kv_aware are forgotten at the next tick, so
memory is bounded by the replicas in the snapshot times `MAX_HASHES_PER_REPLICA`. The same tick
starts fetching the tokenizer of any kv_aware deployment that has none yet, so the first
requests find it ready more often.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Iterable

from slipway.gateway.config import GatewayConfig
from slipway.gateway.replica_reads import ReplicaReadError, get_json
from slipway.gateway.table import DeploymentRoute
from slipway.gateway.tokenizer_cache import TokenizerCache
from slipway.gateway.upstream import UpstreamPool

log = logging.getLogger(__name__)

MAX_HASHES_PER_REPLICA = 65_536
"""Most block hashes kept per replica (the first ones: replicas list the most recently used first)."""
MAX_STATS_BYTES = 8 * 1024 * 1024
"""Largest /stats answer read."""
STALE_AFTER_INTERVALS = 3


class ReplicaStatsPoller:
    def __init__(self, pool: UpstreamPool, config: GatewayConfig, tokenizers: TokenizerCache | None = None) -> None:
        self.pool = pool
        self.config = config
        self.tokenizers = tokenizers
        self.cached_blocks: dict[str, frozenset[int]] = {}
        """replica id -> the block hashes it last reported; absent: unknown."""
        self._reported_at: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self, routes: Callable[[], Iterable[DeploymentRoute]]) -> None:
        """Poll in a background task, reading the current routes at every tick."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(routes), name="slipway-replica-stats")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def poll_once(self, routes: Iterable[DeploymentRoute]) -> None:
        """One tick: read every kv_aware replica's /stats, forget the replicas no longer polled or stale."""
        targets: dict[str, str] = {}
        for route in routes:
            if not route.policy.needs_block_hashes:
                continue
            if self.tokenizers is not None:
                self.tokenizers.prefetch(route, time.monotonic())
            for replica in route.replicas:
                if replica.ready:
                    targets[replica.replica_id] = replica.url
        if targets:
            await asyncio.gather(*(self._read(replica_id, url) for replica_id, url in targets.items()))
        stale_before = time.monotonic() - STALE_AFTER_INTERVALS * self.config.replica_stats_interval
        for replica_id in list(self.cached_blocks):
            if replica_id not in targets or self._reported_at.get(replica_id, 0.0) < stale_before:
                self.forget(replica_id)

    def forget(self, replica_id: str) -> None:
        self.cached_blocks.pop(replica_id, None)
        self._reported_at.pop(replica_id, None)

    async def _run(self, routes: Callable[[], Iterable[DeploymentRoute]]) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.replica_stats_interval
        while True:
            started = loop.time()
            try:
                await self.poll_once(routes())
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the poller must outlive any one bad tick
                log.exception("reading replica stats failed; trying again next tick")
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))

    async def _read(self, replica_id: str, url: str) -> None:
        try:
            stats = await get_json(self.pool, url, b"/stats", timeout=self.config.replica_stats_timeout,
                                   max_bytes=MAX_STATS_BYTES)
        except ReplicaReadError as exc:
            log.debug("replica %s: %s", replica_id, exc.message)
            return
        hashes = stats.get("cached_block_hashes") if isinstance(stats, dict) else None
        if not isinstance(hashes, list):
            return  # an engine that reports no summary: unknown, and kv_aware uses what it routed
        self.cached_blocks[replica_id] = frozenset(h for h in hashes[:MAX_HASHES_PER_REPLICA] if type(h) is int)
        self._reported_at[replica_id] = time.monotonic()
