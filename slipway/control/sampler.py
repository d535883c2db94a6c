"""The metric sampler: one `MetricSample` per running deployment per control-loop tick.

    sample(deployments, replicas, load, now)           called by the tick; never waits on the network
      counts   = what the replicas' /metrics said since the last sample (scraped in the background)
      gauges   = in flight and queued from the gateways' load (the autoscaler's pull, reused),
                 else in flight summed from the replicas' own gauges
      replicas = ready (this tick's observation) and desired (the store)
      history.record(deployment_id, MetricSample(...), now)
      start a scrape round if none runs and the last began `scrape_interval` ago

A scrape round reads GET /metrics of every ready or draining replica at once (at most
`max_concurrent_scrapes` at a time, each bounded by `scrape_timeout` and `max_scrape_bytes`),
parses the pages in a worker thread, and adds what changed since each replica's previous read
to its deployment's pending counts, which the next tick's sample takes. The first read of a
replica counts everything it reports when the replica started after the sampler did (it was
seen from birth); for one adopted from an earlier control plane it only sets the baseline. A
replica that does not answer counts for nothing this round (logged once while it stays so).

Why /metrics and not /stats: /stats holds gauges of this moment, while /metrics holds counters
and histograms since start (requests by status, request duration, and for LLM engines time to
first token and generated tokens). Two reads of those subtract to exactly what happened in
between, so rates and quantiles of any interval come out right however often a read is missed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import httpx
from pydantic import BaseModel, ConfigDict, Field

from slipway.observe.history import HistoryConfig, MetricHistory, MetricSample
from slipway.observe.metrics import ControlMetrics
from slipway.observe.scrape import ReplicaDelta, ReplicaReading, parse_replica_metrics
from slipway.spec.replica import ReplicaObservation, ReplicaState
from slipway.store import DeploymentRow

log = logging.getLogger(__name__)

Load = Mapping[str, tuple[float, float]]
"""deployment_id -> (in flight, queued) as the gateways reported it this tick."""

SCRAPED_STATES = (ReplicaState.READY, ReplicaState.DRAINING)
# How often the history drops deployments whose newest data has aged out (seconds of `now`).
PRUNE_EVERY = 60.0
# A round is due once this share of scrape_interval has passed: ticks jitter, and a round due at
# 0.999 s must not wait for the tick after next.
DUE_SHARE = 0.9


class SamplerConfig(BaseModel):
    """How the control plane samples metrics for the deployment charts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scrape_interval: float = Field(1.0, gt=0, description="Least seconds between the starts of two scrape rounds.")
    scrape_timeout: float = Field(0.5, gt=0, description="Seconds one replica may take to answer GET /metrics.")
    max_concurrent_scrapes: int = Field(32, ge=1, description="Most replicas read at the same time.")
    max_scrape_bytes: int = Field(1024 * 1024, ge=1024, description="Largest /metrics page read from a replica.")
    history: HistoryConfig = Field(default_factory=HistoryConfig, description="What the history keeps.")


@dataclass(frozen=True)
class _Target:
    replica_id: str
    deployment_id: str
    url: str
    started_at: float


class MetricSampler:
    """Feeds `history` from the control loop; see the module docstring."""

    def __init__(self, history: MetricHistory | None = None, config: SamplerConfig | None = None, *,
                 metrics: ControlMetrics | None = None) -> None:
        self.config = config or SamplerConfig()
        self.history = history or MetricHistory(self.config.history)
        self.metrics = metrics
        self._client: httpx.AsyncClient | None = None
        self._round: asyncio.Task | None = None
        self._round_started_at: float | None = None
        self._first_sample_at: float | None = None
        self._last_sampled: dict[str, float] = {}
        self._last_pruned = 0.0
        self._readings: dict[str, ReplicaReading] = {}
        self._pending: dict[str, ReplicaDelta] = {}
        self._quiet: set[str] = set()  # replicas whose last read failed: logged once per outage

    def sample(self, deployments: Sequence[DeploymentRow], replicas: Sequence[ReplicaObservation],
               load: Load | None, now: float) -> None:
        """Record one sample per running deployment at `now` and start the next scrape round if due.

        Synchronous and cheap (no I/O), so the tick is never held up by a slow replica."""
        if self._first_sample_at is None:
            self._first_sample_at = now
        by_deployment: dict[str, list[ReplicaObservation]] = {}
        for replica in replicas:
            by_deployment.setdefault(replica.deployment_id, []).append(replica)
        running = {d.id for d in deployments}
        for deployment in deployments:
            self._sample_one(deployment, by_deployment.get(deployment.id, []), load, now)
        for deployment_id in [d for d in self._last_sampled if d not in running]:
            del self._last_sampled[deployment_id]
        for deployment_id in [d for d in self._pending if d not in running]:
            del self._pending[deployment_id]
        if now - self._last_pruned >= PRUNE_EVERY:
            self._last_pruned = now
            self.history.prune(now)
        self._maybe_scrape(replicas, now)

    async def aclose(self) -> None:
        """Stop a scrape round in progress and close the HTTP client."""
        if self._round is not None and not self._round.done():
            self._round.cancel()
            try:
                await self._round
            except (asyncio.CancelledError, Exception):
                pass
        self._round = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def wait_for_round(self) -> None:
        """Wait for the scrape round in progress, if any (tests use it to make a tick's reads land)."""
        if self._round is not None:
            await asyncio.gather(self._round, return_exceptions=True)

    # -- one deployment ------------------------------------------------------------------------

    def _sample_one(self, deployment: DeploymentRow, replicas: list[ReplicaObservation], load: Load | None,
                    now: float) -> None:
        previous = self._last_sampled.get(deployment.id)
        if previous is not None and now < previous:
            return
        seconds = now - previous if previous is not None else self.config.scrape_interval
        delta = self._pending.pop(deployment.id, ReplicaDelta())
        in_flight, queued = (load or {}).get(deployment.id, (None, None))
        if in_flight is None:
            gauges = [self._readings[r.replica_id].in_flight for r in replicas
                      if r.replica_id in self._readings and self._readings[r.replica_id].in_flight is not None]
            in_flight = sum(gauges) if gauges else None
        sample = MetricSample(
            seconds=seconds, requests=delta.requests, errors=delta.errors, latency=delta.latency, ttft=delta.ttft,
            output_tokens=delta.generation_tokens, in_flight=in_flight, queued=queued,
            replicas_ready=sum(1 for r in replicas if r.state == ReplicaState.READY),
            replicas_desired=deployment.desired_replicas,
        )
        if self.history.record(deployment.id, sample, now):
            self._last_sampled[deployment.id] = now

    # -- scraping ------------------------------------------------------------------------------

    def _maybe_scrape(self, replicas: Sequence[ReplicaObservation], now: float) -> None:
        if self._round is not None and not self._round.done():
            return
        if (self._round_started_at is not None
                and now - self._round_started_at < self.config.scrape_interval * DUE_SHARE):
            return
        targets = [_Target(r.replica_id, r.deployment_id, r.url.rstrip("/"), r.started_at)
                   for r in replicas if r.state in SCRAPED_STATES and r.url]
        live = {t.replica_id for t in targets}
        for replica_id in [r for r in self._readings if r not in live]:
            del self._readings[replica_id]
        self._quiet &= live
        if not targets:
            return
        self._round_started_at = now
        self._round = asyncio.get_running_loop().create_task(self._scrape_round(targets),
                                                             name="slipway-metric-scrape")

    async def _scrape_round(self, targets: list[_Target]) -> None:
        limit = asyncio.Semaphore(self.config.max_concurrent_scrapes)
        pages = await asyncio.gather(*(self._fetch(target, limit) for target in targets))
        fetched = [(target, page) for target, page in zip(targets, pages) if page is not None]
        if not fetched:
            return
        # Parsing is CPU work; in a worker thread it does not hold up the event loop (the gateway's too).
        readings = await asyncio.to_thread(_parse_all, fetched)
        for target, reading in readings:
            if isinstance(reading, Exception):
                self._failed(target, reading)
            else:
                self._absorb(target, reading)

    async def _fetch(self, target: _Target, limit: asyncio.Semaphore) -> str | None:
        async with limit:
            try:
                # The whole read, not only each step of it, is bounded by the timeout.
                async with asyncio.timeout(self.config.scrape_timeout):
                    return await self._read(target)
            except (httpx.HTTPError, ValueError, TimeoutError) as exc:
                self._failed(target, exc)
                return None

    async def _read(self, target: _Target) -> str:
        async with self._http().stream("GET", f"{target.url}/metrics") as response:
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self.config.max_scrape_bytes:
                    raise ValueError(f"its /metrics page is over {self.config.max_scrape_bytes} bytes")
        return body.decode("utf-8", errors="replace")

    def _absorb(self, target: _Target, reading: ReplicaReading) -> None:
        if target.replica_id in self._quiet:
            self._quiet.discard(target.replica_id)
            log.info("replica %s answers /metrics again", target.replica_id,
                     extra={"deployment_id": target.deployment_id})
        previous = self._readings.get(target.replica_id)
        self._readings[target.replica_id] = reading
        born_after_us = self._first_sample_at is not None and target.started_at >= self._first_sample_at
        if previous is None and not born_after_us:
            return  # adopted: what it counted before is not this interval's
        delta = reading.since(previous)
        pending = self._pending.get(target.deployment_id)
        self._pending[target.deployment_id] = delta if pending is None else pending + delta

    def _failed(self, target: _Target, exc: Exception) -> None:
        if self.metrics is not None:
            self.metrics.scrape_failed()
        if target.replica_id not in self._quiet:
            self._quiet.add(target.replica_id)
            log.warning("replica %s did not answer GET /metrics (%s: %s); its figures are left out until it does",
                        target.replica_id, type(exc).__name__, exc, extra={"deployment_id": target.deployment_id})

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # trust_env=False: replicas are on loopback, never behind a proxy from the environment.
            self._client = httpx.AsyncClient(timeout=self.config.scrape_timeout, trust_env=False)
        return self._client


def _parse_all(fetched: list[tuple[_Target, str]]) -> list[tuple[_Target, ReplicaReading | Exception]]:
    results: list[tuple[_Target, ReplicaReading | Exception]] = []
    for target, page in fetched:
        try:
            results.append((target, parse_replica_metrics(page)))
        except Exception as exc:  # one malformed page must not lose the others
            results.append((target, exc))
    return results
