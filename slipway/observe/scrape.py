"""What the control plane reads from one replica's `/metrics`, and what changed between two reads.

    text ──parse_replica_metrics──► ReplicaReading (cumulative counters, gauges)
    reading.since(previous)      ──► ReplicaDelta  (what happened in between; adds up across replicas)

A reading sums over the label sets a replica uses (routes, statuses), since the control plane
keeps one series per deployment. The names read are the replica's (`slipway_replica_*`) and,
for LLM replicas, the engine's (`slipway_llm_*`); a figure a replica does not expose stays None,
so "not reported" never reads as zero. Pure: text in, numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from prometheus_client.parser import text_string_to_metric_families

from slipway.observe import histogram
from slipway.observe.histogram import Buckets
from slipway.observe.metrics import (
    LLM_GENERATION_TOKENS,
    LLM_TIME_TO_FIRST_TOKEN,
    REPLICA_IN_FLIGHT,
    REPLICA_REQUEST_DURATION,
    REPLICA_REQUESTS,
)

# Responses at or above this status count as errors, as in the usage API's `errors`.
ERROR_STATUS = 400


@dataclass(frozen=True)
class ReplicaReading:
    """One scrape of a replica's /metrics: cumulative counts since the replica started, and gauges."""

    requests: float = 0.0
    errors: float = 0.0
    """Responses with status >= 400."""
    latency: Mapping[float, float] = field(default_factory=dict)
    """Request duration histogram, cumulative count per upper bound (seconds), all routes summed."""
    ttft: Mapping[float, float] | None = None
    """Time to first token histogram, cumulative per bound; None for replicas without an LLM engine."""
    generation_tokens: float | None = None
    """Tokens generated since start; None for replicas without an LLM engine."""
    in_flight: float | None = None
    """Requests the replica works on now."""

    def since(self, previous: "ReplicaReading | None") -> "ReplicaDelta":
        """What happened between `previous` and this reading. A counter that went down means the
        process restarted: then everything this reading holds happened since."""
        if previous is None:
            return self._as_delta()
        latency = histogram.cumulative_delta(self.latency, previous.latency)
        ttft = histogram.cumulative_delta(self.ttft or {}, previous.ttft or {})
        tokens = _counter_delta(self.generation_tokens, previous.generation_tokens)
        if (self.requests < previous.requests or self.errors < previous.errors or latency is None
                or ttft is None or tokens is None):
            return self._as_delta()
        return ReplicaDelta(requests=self.requests - previous.requests, errors=self.errors - previous.errors,
                            latency=latency, ttft=ttft,
                            generation_tokens=tokens if self.generation_tokens is not None else None)

    def _as_delta(self) -> "ReplicaDelta":
        return ReplicaDelta(requests=self.requests, errors=self.errors, latency=histogram.from_cumulative(self.latency),
                            ttft=histogram.from_cumulative(self.ttft or {}), generation_tokens=self.generation_tokens)


@dataclass(frozen=True)
class ReplicaDelta:
    """What replicas did over an interval: requests, errors, histograms of it, tokens generated."""

    requests: float = 0.0
    errors: float = 0.0
    latency: Buckets = histogram.EMPTY
    ttft: Buckets = histogram.EMPTY
    generation_tokens: float | None = None
    """None when no replica involved reports generated tokens."""

    def __add__(self, other: "ReplicaDelta") -> "ReplicaDelta":
        tokens = (None if self.generation_tokens is None and other.generation_tokens is None
                  else (self.generation_tokens or 0.0) + (other.generation_tokens or 0.0))
        return ReplicaDelta(requests=self.requests + other.requests, errors=self.errors + other.errors,
                            latency=histogram.merge(self.latency, other.latency),
                            ttft=histogram.merge(self.ttft, other.ttft), generation_tokens=tokens)


def _counter_delta(current: float | None, previous: float | None) -> float | None:
    """current - previous; None when the counter went down (a restart). A missing side counts as 0."""
    if current is None:
        return 0.0
    delta = current - (previous or 0.0)
    return delta if delta >= 0 else None


def parse_replica_metrics(text: str) -> ReplicaReading:
    """The figures the control plane keeps, out of a replica's Prometheus text exposition.

    Raises ValueError when the text is not the exposition format.
    """
    requests = errors = 0.0
    latency: dict[float, float] = {}
    ttft: dict[float, float] = {}
    tokens: float | None = None
    in_flight: float | None = None
    seen_ttft = False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, float(sample.value)
            if name == REPLICA_REQUESTS:
                requests += value
                if _status(labels) >= ERROR_STATUS:
                    errors += value
            elif name == f"{REPLICA_REQUEST_DURATION}_bucket":
                bound = histogram.parse_bound(labels["le"])
                latency[bound] = latency.get(bound, 0.0) + value
            elif name == f"{LLM_TIME_TO_FIRST_TOKEN}_bucket":
                seen_ttft = True
                bound = histogram.parse_bound(labels["le"])
                ttft[bound] = ttft.get(bound, 0.0) + value
            elif name == LLM_GENERATION_TOKENS:
                tokens = (tokens or 0.0) + value
            elif name == REPLICA_IN_FLIGHT:
                in_flight = (in_flight or 0.0) + value
    return ReplicaReading(requests=requests, errors=errors, latency=latency, ttft=ttft if seen_ttft else None,
                          generation_tokens=tokens, in_flight=in_flight)


def _status(labels: Mapping[str, str]) -> int:
    try:
        return int(labels.get("status", "0"))
    except ValueError:
        return 0
