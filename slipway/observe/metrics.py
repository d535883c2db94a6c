"""Prometheus metric names and the metric families of the control plane and the gateway.

Names follow Prometheus conventions (`slipway_<component>_..._seconds`, `_total`) and stay
stable: dashboards (deploy/grafana/slipway.json) and alerts are written against them. Each
component owns a `CollectorRegistry` of its own, so several apps can live in one process (tests).

    control plane  ControlMetrics   slipway_control_*   GET /metrics of the management API
    gateway        GatewayMetrics   slipway_gateway_*   the gateway calls observe_request(...) etc.
    replica        (slipway.server.metrics)  slipway_replica_*, and slipway_llm_* for LLM engines

Labels name the model, the environment and the deployment. Label values come only from the
routing snapshot (names the control plane accepted), never from what a client typed, and each
component caps how many label sets it keeps (`max_series`); past the cap new ones are counted
under `OVERFLOW_LABEL`, so a misbehaving fleet cannot grow the page without bound.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# -- names other processes expose (read by the control plane, charted by dashboards) ------------

REPLICA_REQUESTS = "slipway_replica_requests_total"
REPLICA_REQUEST_DURATION = "slipway_replica_request_duration_seconds"
REPLICA_IN_FLIGHT = "slipway_replica_in_flight"
REPLICA_READY = "slipway_replica_ready"

LLM_TIME_TO_FIRST_TOKEN = "slipway_llm_time_to_first_token_seconds"
LLM_INTER_TOKEN_LATENCY = "slipway_llm_inter_token_latency_seconds"
LLM_E2E_REQUEST_LATENCY = "slipway_llm_e2e_request_latency_seconds"
LLM_REQUESTS_RUNNING = "slipway_llm_num_requests_running"
LLM_REQUESTS_WAITING = "slipway_llm_num_requests_waiting"
LLM_KV_BLOCKS_USED = "slipway_llm_kv_blocks_used"
LLM_KV_BLOCKS_TOTAL = "slipway_llm_kv_blocks_total"
LLM_PROMPT_TOKENS = "slipway_llm_prompt_tokens_total"
LLM_GENERATION_TOKENS = "slipway_llm_generation_tokens_total"

# -- buckets ------------------------------------------------------------------------------------

# Request durations up to two minutes, so a long LLM stream still lands in a bucket.
REQUEST_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# One control-loop tick: milliseconds when healthy; seconds mean the store or a backend is slow.
TICK_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

OVERFLOW_LABEL = "_other"
"""The value every label takes for label sets past a component's `max_series`."""

DEPLOYMENT_LABELS = ("model", "environment", "deployment")
REPLICA_STATES = ("desired", "ready", "starting", "draining", "crashed", "failed")
"""Values of `state` on slipway_control_replicas; every one is exposed for every running deployment."""


class _LabelBudget:
    """Hands out label sets until `max_series` distinct ones were seen, then the overflow set."""

    def __init__(self, max_series: int, width: int) -> None:
        if max_series < 1:
            raise ValueError(f"max_series is {max_series!r}; give at least 1")
        self.max_series = max_series
        self._seen: set[tuple[str, ...]] = set()
        self._overflow = (OVERFLOW_LABEL,) * width
        self._lock = threading.Lock()

    def admit(self, labels: tuple[str, ...]) -> tuple[str, ...]:
        if labels in self._seen:
            return labels
        with self._lock:
            if labels in self._seen or len(self._seen) < self.max_series:
                self._seen.add(labels)
                return labels
        return self._overflow


def status_class(status_code: int) -> str:
    """'2xx', '4xx', '5xx', ... for an HTTP status; '0xx' for a request that got no status at all."""
    return f"{status_code // 100}xx" if 100 <= status_code <= 599 else "0xx"


# -- the control plane --------------------------------------------------------------------------

@dataclass(frozen=True)
class DeploymentFigures:
    """What the control plane knows of one running deployment, for the per-deployment gauges."""

    model: str
    environment: str
    """The environments it serves, comma-separated in name order ('' when it serves none)."""
    deployment: str
    replicas: dict[str, int]
    """Count per state of REPLICA_STATES ('desired' is the desired count); missing states are 0."""
    autoscaler_desired: int | None = None
    """The count the autoscaler keeps it at; None when its size is fixed or it is not autoscaled now."""


class ControlMetrics:
    """The control plane's metric families; `render()` is the body of its GET /metrics.

        slipway_control_deployments{model,status}                              gauge
        slipway_control_replicas{model,environment,deployment,state}           gauge
        slipway_control_autoscaler_desired_replicas{model,environment,deployment}  gauge
        slipway_control_reconcile_tick_duration_seconds                        histogram
        slipway_control_reconcile_tick_failures_total                          counter
        slipway_control_replica_scrape_failures_total                          counter

    The fleet gauges are rebuilt from scratch by `set_fleet` (so deployments that stopped
    disappear); the tick figures accumulate.
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.deployments = Gauge("slipway_control_deployments", "Deployments by model and status.",
                                 ["model", "status"], registry=self.registry)
        self.replicas = Gauge("slipway_control_replicas",
                              "Replicas of each running deployment by state; state=desired is the desired count.",
                              [*DEPLOYMENT_LABELS, "state"], registry=self.registry)
        self.autoscaler_desired = Gauge("slipway_control_autoscaler_desired_replicas",
                                        "Replicas the autoscaler wants for each deployment it scales.",
                                        list(DEPLOYMENT_LABELS), registry=self.registry)
        self.tick_duration = Histogram("slipway_control_reconcile_tick_duration_seconds",
                                       "Time one control-loop tick took (autoscale, reconcile, record).",
                                       buckets=TICK_DURATION_BUCKETS, registry=self.registry)
        self.tick_failures = Counter("slipway_control_reconcile_tick_failures",
                                     "Control-loop ticks that raised (logged; the loop goes on).",
                                     registry=self.registry)
        self.scrape_failures = Counter("slipway_control_replica_scrape_failures",
                                       "Reads of a replica's /metrics that failed or timed out.",
                                       registry=self.registry)
        # Several scrapes may refresh the fleet at once; each rebuild must be whole.
        self._fleet_lock = threading.Lock()

    def observe_tick(self, seconds: float) -> None:
        self.tick_duration.observe(seconds)

    def tick_failed(self) -> None:
        self.tick_failures.inc()

    def scrape_failed(self) -> None:
        self.scrape_failures.inc()

    def set_fleet(self, deployments_by_status: Iterable[tuple[str, str, int]],
                  running: Iterable[DeploymentFigures]) -> None:
        """Replace the fleet gauges: (model, status, count) triples and each running deployment."""
        with self._fleet_lock:
            self.deployments.clear()
            self.replicas.clear()
            self.autoscaler_desired.clear()
            for model, status, count in deployments_by_status:
                self.deployments.labels(model, status).set(count)
            for figures in running:
                labels = (figures.model, figures.environment, figures.deployment)
                for state in REPLICA_STATES:
                    self.replicas.labels(*labels, state).set(figures.replicas.get(state, 0))
                if figures.autoscaler_desired is not None:
                    self.autoscaler_desired.labels(*labels).set(figures.autoscaler_desired)

    def render(self) -> bytes:
        with self._fleet_lock:
            return generate_latest(self.registry)


# -- the gateway --------------------------------------------------------------------------------

UPSTREAM_ERROR_KINDS = ("connect", "reset", "timeout", "draining", "status", "other")
"""Values of `kind` on slipway_gateway_upstream_errors_total; anything else is counted as 'other'."""


# From a warm process start (well under a second) to a large model loading (minutes).
COLD_START_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, float("inf"))
RECENT_COLD_STARTS = 1000
"""Cold starts kept in memory by `GatewayMetrics.recent_cold_starts`."""


@dataclass(frozen=True, slots=True)
class ColdStart:
    """One request held for a cold start."""

    deployment_id: str
    seconds: float
    """From the request's arrival to its first byte sent."""
    at: float
    """Unix time it was measured."""


class GatewayMetrics:
    """The gateway's metric families, and the calls the gateway makes to update them.

        slipway_gateway_requests_total{model,environment,deployment,status_class}   counter
        slipway_gateway_request_duration_seconds{model,environment,deployment}      histogram
        slipway_gateway_in_flight{model,environment,deployment}                     gauge
        slipway_gateway_upstream_errors_total{model,environment,deployment,kind}    counter
        slipway_gateway_retries_total{model,environment,deployment}                 counter
        slipway_gateway_prompt_tokens_total{model,environment,deployment}           counter
        slipway_gateway_completion_tokens_total{model,environment,deployment}       counter
        slipway_gateway_cold_start_seconds{model,environment,deployment}           histogram

A cold start is measured on requests the gateway held because their deployment had no ready
replica: from the request's arrival to the first byte of its answer (`cold_start`); the last ones
are also kept in memory for a quick look (`recent_cold_starts`).

    A request is counted once it has an answer (`observe_request`), whatever the answer; one
    refused before a deployment was resolved (bad key, unknown model) carries empty labels,
    never the name the client sent. Safe from any thread.
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, *, max_series: int = 10_000) -> None:
        """max_series: most (model, environment, deployment) label sets kept; past it, OVERFLOW_LABEL."""
        self.registry = CollectorRegistry(auto_describe=True)
        self._budget = _LabelBudget(max_series, len(DEPLOYMENT_LABELS))
        labels = list(DEPLOYMENT_LABELS)
        self.requests = Counter("slipway_gateway_requests", "Requests answered, by status class (2xx, 4xx, 5xx).",
                                [*labels, "status_class"], registry=self.registry)
        self.duration = Histogram("slipway_gateway_request_duration_seconds",
                                  "Time from request received to last byte sent, as the client saw it.",
                                  labels, buckets=REQUEST_DURATION_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("slipway_gateway_in_flight", "Requests being proxied now.", labels,
                               registry=self.registry)
        self.upstream_errors = Counter("slipway_gateway_upstream_errors",
                                       "Failed attempts to reach a replica, by kind "
                                       f"({', '.join(UPSTREAM_ERROR_KINDS)}).",
                                       [*labels, "kind"], registry=self.registry)
        self.retries = Counter("slipway_gateway_retries", "Requests sent again to another replica after a failure.",
                               labels, registry=self.registry)
        self.prompt_tokens = Counter("slipway_gateway_prompt_tokens", "Prompt (input) tokens of answered requests.",
                                     labels, registry=self.registry)
        self.completion_tokens = Counter("slipway_gateway_completion_tokens",
                                         "Completion (output) tokens of answered requests.", labels,
                                         registry=self.registry)
        self.cold_start_seconds = Histogram(
            "slipway_gateway_cold_start_seconds",
            "Seconds from the arrival of a request held for a cold start (its deployment had no ready "
            "replica) to the first byte of its answer.", labels, buckets=COLD_START_BUCKETS,
            registry=self.registry)
        self._recent_cold_starts: deque[ColdStart] = deque(maxlen=RECENT_COLD_STARTS)

    def _labels(self, model: str, environment: str | None, deployment: str | None) -> tuple[str, str, str]:
        return self._budget.admit((model or "", environment or "", deployment or ""))  # type: ignore[return-value]

    def observe_request(self, model: str, environment: str | None, deployment: str | None, *, status_code: int,
                        seconds: float, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """One answered request: its status, how long it took end to end, and the tokens metered."""
        labels = self._labels(model, environment, deployment)
        self.requests.labels(*labels, status_class(status_code)).inc()
        self.duration.labels(*labels).observe(max(seconds, 0.0))
        if prompt_tokens > 0:
            self.prompt_tokens.labels(*labels).inc(prompt_tokens)
        if completion_tokens > 0:
            self.completion_tokens.labels(*labels).inc(completion_tokens)

    @contextmanager
    def in_flight_request(self, model: str, environment: str | None, deployment: str | None) -> Iterator[None]:
        """Counts the block as one request in flight: `with metrics.in_flight_request(m, e, d): ...`."""
        gauge = self.in_flight.labels(*self._labels(model, environment, deployment))
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def upstream_error(self, model: str, environment: str | None, deployment: str | None, kind: str) -> None:
        """An attempt to reach a replica failed; `kind` is one of UPSTREAM_ERROR_KINDS."""
        kind = kind if kind in UPSTREAM_ERROR_KINDS else "other"
        self.upstream_errors.labels(*self._labels(model, environment, deployment), kind).inc()

    def retry(self, model: str, environment: str | None, deployment: str | None) -> None:
        """A request is being sent again, to another replica."""
        self.retries.labels(*self._labels(model, environment, deployment)).inc()

    def cold_start(self, model: str, environment: str | None, deployment: str, seconds: float) -> None:
        """A request held for a cold start got its first byte `seconds` after it arrived."""
        self.cold_start_seconds.labels(*self._labels(model, environment, deployment)).observe(max(seconds, 0.0))
        self._recent_cold_starts.append(ColdStart(deployment, seconds, time.time()))

    def recent_cold_starts(self, deployment_id: str | None = None) -> list[ColdStart]:
        """The last cold starts measured (at most RECENT_COLD_STARTS), oldest first; of one deployment if given."""
        return [c for c in self._recent_cold_starts if deployment_id is None or c.deployment_id == deployment_id]

    def render(self) -> bytes:
        return generate_latest(self.registry)
