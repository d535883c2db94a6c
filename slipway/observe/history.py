"""Recent metric history per deployment, in memory, coarser as it ages.

    record(deployment_id, sample, now)   once per control-loop tick
    series(deployment_id, since, now)    -> [SeriesPoint], oldest first, for charts and the API

The downsampling rule. History is kept in tiers, finest first; by default

    tier 0:  5 s buckets for the last 15 minutes
    tier 1: 60 s buckets for the last 24 hours

A sample lands in the tier-0 bucket holding `now` (start = now floored to 5 s). Once a whole
60 s interval of tier 0 lies more than 15 minutes before `now`, its 5 s buckets are merged into
the one tier-1 bucket of that interval; tier-1 buckets more than 24 hours old are dropped. So a
moment is always in exactly one tier, and a series of the last hour is 5 s points for the most
recent 15 minutes and 1 minute points before.

Merging is exact, because buckets keep sums rather than averages: counts (requests, errors,
tokens) and the seconds they cover add up, histograms add bucket by bucket (quantiles are
read from the merged histogram, never averaged), gauges (in flight, queued) keep a sum and a
count for their mean, and replica counts keep the last value seen. A finished bucket of the
last tier is never merged again, so it keeps its quantiles and lets its histograms go.

Memory is bounded per deployment (each tier holds at most keep/resolution buckets plus the
ones of one coarser interval) and in total (at most `max_deployments` deployments; the one
recorded longest ago is dropped first). Time is an argument; a lock makes every method safe
from any thread (the control loop records, API workers read).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from slipway.observe import histogram
from slipway.observe.histogram import Buckets


@dataclass(frozen=True, slots=True)
class MetricSample:
    """What one deployment did over `seconds` up to the moment it is recorded."""

    seconds: float
    """The time the counts cover (since the deployment's previous sample)."""
    requests: float = 0.0
    errors: float = 0.0
    """Requests answered with status >= 400."""
    latency: Buckets = histogram.EMPTY
    """Request duration histogram (seconds) of the requests counted."""
    ttft: Buckets = histogram.EMPTY
    """Time-to-first-token histogram (seconds); empty for deployments without an LLM engine."""
    output_tokens: float | None = None
    """Tokens generated; None when the deployment does not report them (not an LLM)."""
    in_flight: float | None = None
    """Requests in flight now; None when unknown."""
    queued: float | None = None
    """Requests waiting for a replica now; None when unknown."""
    replicas_ready: int = 0
    replicas_desired: int = 0


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One bucket of history as the charts read it; None where there was nothing to measure."""

    t: float
    """Start of the bucket (Unix seconds)."""
    step: float
    """Width of the bucket in seconds (the tier's resolution)."""
    requests_per_second: float
    error_rate: float | None
    """Errors / requests; None without requests."""
    latency_p50_seconds: float | None
    latency_p99_seconds: float | None
    ttft_p50_seconds: float | None
    ttft_p99_seconds: float | None
    output_tokens_per_second: float | None
    in_flight: float | None
    """Mean over the bucket."""
    queued: float | None
    """Mean over the bucket."""
    replicas_ready: int
    """Last value seen in the bucket."""
    replicas_desired: int


class Tier(BaseModel):
    """One level of resolution."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resolution: float = Field(gt=0, description="Seconds per bucket.")
    keep: float = Field(gt=0, description="Seconds of history kept at this resolution.")


class HistoryConfig(BaseModel):
    """How much history is kept, and how coarse it gets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tiers: tuple[Tier, ...] = Field(
        (Tier(resolution=5, keep=900), Tier(resolution=60, keep=86_400)),
        description="Finest first. Each resolution must divide the next one, and each tier must keep at "
                    "least one bucket of the next (coarser) tier.")
    max_deployments: int = Field(
        500, ge=1, description="Most deployments with history; the one recorded longest ago is dropped first. "
                               "A busy LLM deployment's full day takes about 1 MB, an idle one's a third of that.")

    @model_validator(mode="after")
    def _check_tiers(self) -> "HistoryConfig":
        problems = []
        if not self.tiers:
            problems.append("tiers is empty; give at least one, e.g. [{resolution: 5, keep: 900}]")
        for finer, coarser in zip(self.tiers, self.tiers[1:]):
            ratio = coarser.resolution / finer.resolution
            if ratio < 1 or not math.isclose(ratio, round(ratio)):
                problems.append(f"resolution {coarser.resolution}s is not a multiple of {finer.resolution}s; "
                                "each tier's resolution must divide the next one")
            if finer.keep < coarser.resolution:
                problems.append(f"a tier keeping {finer.keep}s cannot fill a {coarser.resolution}s bucket of the "
                                "next tier; keep at least one coarser bucket")
        for tier in self.tiers:
            if tier.keep < tier.resolution:
                problems.append(f"keep {tier.keep}s is shorter than one {tier.resolution}s bucket")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def max_buckets_per_deployment(self) -> int:
        """The most buckets one deployment can hold across all tiers."""
        total = 0
        for i, tier in enumerate(self.tiers):
            waiting_to_fold = self.tiers[i + 1].resolution / tier.resolution if i + 1 < len(self.tiers) else 0
            total += math.ceil(tier.keep / tier.resolution) + int(waiting_to_fold) + 1
        return total


class _Bucket:
    """Sums over one time bucket; see the module docstring for how each figure merges."""

    __slots__ = ("start", "seconds", "requests", "errors", "latency", "ttft", "output_tokens", "in_flight_sum",
                 "in_flight_n", "queued_sum", "queued_n", "replicas_ready", "replicas_desired", "quantiles")

    def __init__(self, start: float) -> None:
        self.start = start
        self.seconds = 0.0
        self.requests = 0.0
        self.errors = 0.0
        self.latency: Buckets = histogram.EMPTY
        self.ttft: Buckets = histogram.EMPTY
        self.output_tokens: float | None = None
        self.in_flight_sum = 0.0
        self.in_flight_n = 0
        self.queued_sum = 0.0
        self.queued_n = 0
        self.replicas_ready = 0
        self.replicas_desired = 0
        # Set by seal(): (latency p50, p99, ttft p50, p99) read once the histograms are let go.
        self.quantiles: tuple[float | None, ...] | None = None

    def seal(self) -> None:
        """Keep the quantiles and drop the histograms, for a bucket nothing will be merged into."""
        self.quantiles = (histogram.quantile(0.5, self.latency), histogram.quantile(0.99, self.latency),
                          histogram.quantile(0.5, self.ttft), histogram.quantile(0.99, self.ttft))
        self.latency = self.ttft = histogram.EMPTY

    def add(self, sample: MetricSample) -> None:
        self.seconds += max(sample.seconds, 0.0)
        self.requests += sample.requests
        self.errors += sample.errors
        if sample.latency:
            self.latency = histogram.merge(self.latency, sample.latency)
        if sample.ttft:
            self.ttft = histogram.merge(self.ttft, sample.ttft)
        if sample.output_tokens is not None:
            self.output_tokens = (self.output_tokens or 0.0) + sample.output_tokens
        if sample.in_flight is not None:
            self.in_flight_sum += sample.in_flight
            self.in_flight_n += 1
        if sample.queued is not None:
            self.queued_sum += sample.queued
            self.queued_n += 1
        self.replicas_ready = sample.replicas_ready
        self.replicas_desired = sample.replicas_desired

    def absorb(self, later: "_Bucket") -> None:
        """Merge a bucket that starts at or after this one's start (neither sealed)."""
        assert self.quantiles is None and later.quantiles is None, "a sealed bucket cannot be merged"
        self.seconds += later.seconds
        self.requests += later.requests
        self.errors += later.errors
        self.latency = histogram.merge(self.latency, later.latency)
        self.ttft = histogram.merge(self.ttft, later.ttft)
        if later.output_tokens is not None:
            self.output_tokens = (self.output_tokens or 0.0) + later.output_tokens
        self.in_flight_sum += later.in_flight_sum
        self.in_flight_n += later.in_flight_n
        self.queued_sum += later.queued_sum
        self.queued_n += later.queued_n
        self.replicas_ready = later.replicas_ready
        self.replicas_desired = later.replicas_desired

    def point(self, step: float) -> SeriesPoint:
        latency_p50, latency_p99, ttft_p50, ttft_p99 = self.quantiles or (
            histogram.quantile(0.5, self.latency), histogram.quantile(0.99, self.latency),
            histogram.quantile(0.5, self.ttft), histogram.quantile(0.99, self.ttft))
        seconds = self.seconds if self.seconds > 0 else math.inf  # no time covered: rates of 0
        return SeriesPoint(
            t=self.start, step=step,
            requests_per_second=self.requests / seconds,
            error_rate=self.errors / self.requests if self.requests > 0 else None,
            latency_p50_seconds=latency_p50, latency_p99_seconds=latency_p99,
            ttft_p50_seconds=ttft_p50, ttft_p99_seconds=ttft_p99,
            output_tokens_per_second=None if self.output_tokens is None else self.output_tokens / seconds,
            in_flight=self.in_flight_sum / self.in_flight_n if self.in_flight_n else None,
            queued=self.queued_sum / self.queued_n if self.queued_n else None,
            replicas_ready=self.replicas_ready, replicas_desired=self.replicas_desired,
        )


class _Timeline:
    """One deployment's buckets, one deque per tier, oldest first."""

    __slots__ = ("tiers",)

    def __init__(self, levels: int) -> None:
        self.tiers: list[deque[_Bucket]] = [deque() for _ in range(levels)]

    def bucket_count(self) -> int:
        return sum(len(t) for t in self.tiers)

    def newest_start(self) -> float | None:
        for tier in self.tiers:
            if tier:
                return tier[-1].start
        return None


class MetricHistory:
    """Bounded, downsampled metric history of every deployment; see the module docstring."""

    def __init__(self, config: HistoryConfig | None = None) -> None:
        self.config = config or HistoryConfig()
        self._timelines: OrderedDict[str, _Timeline] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, deployment_id: str, sample: MetricSample, now: float) -> bool:
        """Add the sample at `now`; False (nothing kept) when `now` is before the newest bucket."""
        with self._lock:
            return self._record(deployment_id, sample, now)

    def _record(self, deployment_id: str, sample: MetricSample, now: float) -> bool:
        timeline = self._timelines.get(deployment_id)
        if timeline is None:
            while len(self._timelines) >= self.config.max_deployments:
                self._timelines.popitem(last=False)
            timeline = self._timelines[deployment_id] = _Timeline(len(self.config.tiers))
        newest = timeline.newest_start()
        if newest is not None and now < newest:
            return False
        self._timelines.move_to_end(deployment_id)
        finest = timeline.tiers[0]
        start = _floor(now, self.config.tiers[0].resolution)
        if not finest or finest[-1].start != start:
            finest.append(_Bucket(start))
        finest[-1].add(sample)
        self._age(timeline, now)
        return True

    def series(self, deployment_id: str, since: float, now: float) -> list[SeriesPoint]:
        """The buckets that overlap [since, now], oldest first; empty for an unknown deployment."""
        with self._lock:
            timeline = self._timelines.get(deployment_id)
            if timeline is None:
                return []
            self._age(timeline, now)
            return self._points(timeline, since, now)

    def _points(self, timeline: _Timeline, since: float, now: float) -> list[SeriesPoint]:
        points = []
        for tier, buckets in reversed(list(zip(self.config.tiers, timeline.tiers))):
            points += [b.point(tier.resolution) for b in buckets
                       if b.start + tier.resolution > since and b.start <= now]
        points.sort(key=lambda p: p.t)
        return points

    def prune(self, now: float) -> None:
        """Age every deployment's buckets to `now` and drop deployments left without any."""
        with self._lock:
            for deployment_id in list(self._timelines):
                timeline = self._timelines[deployment_id]
                self._age(timeline, now)
                if timeline.bucket_count() == 0:
                    del self._timelines[deployment_id]

    def forget(self, deployment_id: str) -> None:
        with self._lock:
            self._timelines.pop(deployment_id, None)

    def deployment_ids(self) -> list[str]:
        """Deployments with history, recorded longest ago first."""
        with self._lock:
            return list(self._timelines)

    def bucket_count(self, deployment_id: str | None = None) -> int:
        """Buckets kept for one deployment, or for all of them."""
        with self._lock:
            if deployment_id is not None:
                timeline = self._timelines.get(deployment_id)
                return timeline.bucket_count() if timeline else 0
            return sum(t.bucket_count() for t in self._timelines.values())

    def _age(self, timeline: _Timeline, now: float) -> None:
        """Fold whole coarser intervals out of each tier once they are older than its `keep`;
        drop what the last tier no longer keeps."""
        tiers = self.config.tiers
        for level, tier in enumerate(tiers):
            buckets = timeline.tiers[level]
            horizon = now - tier.keep
            if level + 1 == len(tiers):
                while buckets and buckets[0].start + tier.resolution <= horizon:
                    buckets.popleft()
                continue
            coarser, coarse_buckets = tiers[level + 1], timeline.tiers[level + 1]
            while buckets:
                interval = _floor(buckets[0].start, coarser.resolution)
                if interval + coarser.resolution > horizon:
                    break
                if not coarse_buckets or coarse_buckets[-1].start != interval:
                    if coarse_buckets and level + 2 == len(tiers):
                        # The last tier never merges: a finished bucket keeps its quantiles, not
                        # its histograms (most of a day's memory otherwise).
                        coarse_buckets[-1].seal()
                    coarse_buckets.append(_Bucket(interval))
                while buckets and buckets[0].start < interval + coarser.resolution:
                    coarse_buckets[-1].absorb(buckets.popleft())


def _floor(t: float, step: float) -> float:
    return math.floor(t / step) * step
