"""The gateway's own metrics: a Prometheus registry, and the recent cold starts kept for a quick look.

    metrics = GatewayMetrics()
    metrics.cold_start("d-1a2b", 4.2)       # a held request's first byte went out 4.2 s after it arrived
    metrics.recent_cold_starts()            # [ColdStart("d-1a2b", 4.2, at)], oldest first, bounded
    metrics.registry                        # slipway_gateway_cold_start_seconds{deployment}

A cold start is measured on requests the gateway held because their deployment had no ready
replica: from the request's arrival to the first byte of the answer sent to the client.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram

# Most recent cold starts kept in memory for `recent_cold_starts()`.
_RECENT_COLD_STARTS = 1000
# From a warm process start (well under a second) to a large model loading (minutes).
_COLD_START_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, float("inf"))


@dataclass(frozen=True, slots=True)
class ColdStart:
    """One request held for a cold start."""

    deployment_id: str
    seconds: float
    """From the request's arrival to its first byte sent."""
    at: float
    """Unix time it was measured."""


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.cold_start_seconds = Histogram(
            "slipway_gateway_cold_start_seconds",
            "Seconds from the arrival of a request held for a cold start (its deployment had no ready "
            "replica) to the first byte of its answer.",
            ["deployment"], registry=self.registry, buckets=_COLD_START_BUCKETS)
        self._recent: deque[ColdStart] = deque(maxlen=_RECENT_COLD_STARTS)

    def cold_start(self, deployment_id: str, seconds: float) -> None:
        self.cold_start_seconds.labels(deployment=deployment_id).observe(seconds)
        self._recent.append(ColdStart(deployment_id, seconds, time.time()))

    def recent_cold_starts(self, deployment_id: str | None = None) -> list[ColdStart]:
        """The last cold starts measured (at most 1000), oldest first; of one deployment if given."""
        return [c for c in self._recent if deployment_id is None or c.deployment_id == deployment_id]
