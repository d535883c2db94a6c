"""The replica's Prometheus metrics, on a registry of its own (one per app, so tests can run
several apps in one process).

    slipway_replica_requests_total{route,status}        counter
    slipway_replica_request_duration_seconds{route}     histogram (streams: until the last chunk)
    slipway_replica_in_flight                           gauge
    slipway_replica_ready                               gauge, 1 when serving

`route` is one of a fixed set (predict, embeddings, chat.completions, completions, other), so
the label's cardinality stays bounded whatever paths clients call; `status` 499 counts requests
whose client left before the answer. A kind `llm` replica adds the engine's `slipway_llm_*`
metrics (llm_metrics.py).
"""

from __future__ import annotations

from typing import Any, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from slipway.server.llm_metrics import LlmEngineCollector

# Up to two minutes: a long LLM stream still lands in a bucket.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ReplicaMetrics:
    """Counters the app updates per request; `render()` is the /metrics body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("slipway_replica_requests", "Requests answered by this replica.",
                                ["route", "status"], registry=self.registry)
        self.duration = Histogram("slipway_replica_request_duration_seconds",
                                  "Time from request received to last byte sent.", ["route"],
                                  buckets=DURATION_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("slipway_replica_in_flight", "Requests being worked on now.",
                               registry=self.registry)
        self.ready = Gauge("slipway_replica_ready", "1 when the replica serves traffic.", registry=self.registry)

    def watch_llm_engine(self, runtime: Callable[[], Any], *, model: str) -> None:
        """Export the `slipway_llm_*` metrics of the runtime `runtime()` returns, read at each scrape."""
        self.registry.register(LlmEngineCollector(runtime, model))

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.duration.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
