"""Reading a replica's /metrics page: the real replica metrics, LLM engine families, restarts."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from slipway.observe import histogram as h
from slipway.observe.metrics import LLM_GENERATION_TOKENS, LLM_TIME_TO_FIRST_TOKEN
from slipway.observe.scrape import ReplicaDelta, parse_replica_metrics
from slipway.server.metrics import ReplicaMetrics


def replica_page(metrics: ReplicaMetrics) -> str:
    return metrics.render().decode()


def test_a_replica_page_reads_as_requests_errors_latency_and_in_flight():
    metrics = ReplicaMetrics()
    metrics.observe("predict", 200, 0.02)
    metrics.observe("chat.completions", 200, 0.3)
    metrics.observe("predict", 404, 0.001)
    metrics.observe("predict", 503, 0.001)
    metrics.in_flight.set(3)
    reading = parse_replica_metrics(replica_page(metrics))
    assert (reading.requests, reading.errors, reading.in_flight) == (4, 2, 3)
    assert reading.ttft is None and reading.generation_tokens is None  # not an LLM engine
    delta = reading.since(None)
    assert h.count(delta.latency) == 4
    assert 0.1 < h.quantile(0.99, delta.latency) <= 0.5


def test_since_counts_what_happened_between_two_reads():
    metrics = ReplicaMetrics()
    metrics.observe("predict", 200, 0.02)
    first = parse_replica_metrics(replica_page(metrics))
    metrics.observe("predict", 200, 0.7)
    metrics.observe("predict", 500, 0.7)
    delta = parse_replica_metrics(replica_page(metrics)).since(first)
    assert (delta.requests, delta.errors) == (2, 1)
    assert h.count(delta.latency) == 2 and h.quantile(0.5, delta.latency) > 0.5


def test_after_a_restart_everything_the_new_process_reports_counts():
    old = ReplicaMetrics()
    for _ in range(5):
        old.observe("predict", 200, 0.02)
    before = parse_replica_metrics(replica_page(old))
    restarted = ReplicaMetrics()
    restarted.observe("predict", 200, 0.02)
    delta = parse_replica_metrics(replica_page(restarted)).since(before)
    assert delta.requests == 1 and h.count(delta.latency) == 1


def llm_page(ttft_values: list[float], tokens: int) -> str:
    """What an LLM replica adds to its page, in the names the engine exposes."""
    registry = CollectorRegistry()
    ttft = Histogram(LLM_TIME_TO_FIRST_TOKEN, "ttft", registry=registry,
                     buckets=(0.01, 0.05, 0.1, 0.5, 1.0))
    for value in ttft_values:
        ttft.observe(value)
    Counter(LLM_GENERATION_TOKENS.removesuffix("_total"), "tokens", registry=registry).inc(tokens)
    return generate_latest(registry).decode()


def test_llm_figures_time_to_first_token_and_generated_tokens():
    first = parse_replica_metrics(llm_page([0.03, 0.04], tokens=100))
    later = parse_replica_metrics(llm_page([0.03, 0.04, 0.3, 0.3], tokens=250))
    delta = later.since(first)
    assert delta.generation_tokens == 150
    assert h.count(delta.ttft) == 2 and 0.1 < h.quantile(0.5, delta.ttft) <= 0.5


def test_deltas_of_several_replicas_add_up_and_unknown_tokens_stay_unknown():
    plain = ReplicaDelta(requests=2, latency=h.from_observations([0.02, 0.02], (0.05,)))
    llm = ReplicaDelta(requests=1, generation_tokens=40.0, latency=h.from_observations([0.2], (0.05, 0.5)))
    total = plain + llm
    assert total.requests == 3 and total.generation_tokens == 40.0 and h.count(total.latency) == 3
    assert (plain + plain).generation_tokens is None


def test_a_page_that_is_not_the_exposition_format_raises():
    with pytest.raises(ValueError):
        parse_replica_metrics("<html>not metrics</html>\n")
