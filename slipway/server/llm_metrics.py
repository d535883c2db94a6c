"""The LLM engine's Prometheus metrics of a kind `llm` replica, read from its runtime at each scrape.

    slipway_llm_time_to_first_token_seconds{model}         histogram  arrival at the engine -> first token
    slipway_llm_inter_token_latency_seconds{model}         histogram  between tokens, one observation per token
    slipway_llm_e2e_request_latency_seconds{model}         histogram  arrival -> last token, finished requests
    slipway_llm_num_requests_running{model}                gauge      sequences in the running batch
    slipway_llm_num_requests_waiting{model}                gauge      sequences waiting to be scheduled
    slipway_llm_kv_blocks_used{model}                      gauge      KV blocks referenced by sequences
    slipway_llm_kv_blocks_total{model}                     gauge      KV blocks in the cache
    slipway_llm_kv_blocks_cached{model}                    gauge      blocks holding a reusable prefix (used or free)
    slipway_llm_kv_cache_usage_ratio{model}                gauge      used / total, 0..1
    slipway_llm_prompt_tokens_total{model}                 counter    prompt tokens of admitted requests
    slipway_llm_generation_tokens_total{model}             counter    tokens generated
    slipway_llm_prefix_cache_hit_tokens_total{model}       counter    prompt tokens served from the prefix cache
    slipway_llm_prefix_cache_queried_tokens_total{model}   counter    prompt tokens looked up in the prefix cache
    slipway_llm_num_preemptions_total{model}               counter    sequences preempted for lack of KV blocks
    slipway_llm_spec_draft_tokens_total{model}             counter    speculative draft tokens verified
    slipway_llm_spec_accepted_tokens_total{model}          counter    speculative draft tokens accepted

`model` is the package's name. A custom collector: counters and gauges are the runtime's own
figures (`engine_stats()`, the same ones /stats carries), so they are exactly the engine's
monotonic totals and nothing is updated per token; histograms are the engine's snapshots
(`latency_histograms()`). Before the runtime has loaded, and for figures a runtime does not
report (the vllm engine has no latency histograms here: vLLM exports its own), the series are
absent. A failing read is logged and costs this scrape's engine series, never the whole page.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Mapping, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from slipway.runtimes.llm import LlmRuntime

log = logging.getLogger(__name__)

LABELS = ["model"]

# (metric name, engine_stats() key, help). Counter names are given without `_total`, which the
# exposition adds.
GAUGES = (
    ("slipway_llm_num_requests_running", "running", "Sequences in the engine's running batch."),
    ("slipway_llm_num_requests_waiting", "waiting", "Sequences waiting to be scheduled."),
    ("slipway_llm_kv_blocks_used", "kv_blocks_used", "KV-cache blocks referenced by sequences."),
    ("slipway_llm_kv_blocks_total", "kv_blocks_total", "KV-cache blocks in the cache."),
    ("slipway_llm_kv_blocks_cached", "kv_blocks_cached", "KV-cache blocks holding a reusable prefix, used or free."),
    ("slipway_llm_kv_cache_usage_ratio", "kv_usage", "Used KV-cache blocks over all blocks, 0 to 1."),
)
COUNTERS = (
    ("slipway_llm_prompt_tokens", "prompt_tokens_total", "Prompt tokens of admitted requests."),
    ("slipway_llm_generation_tokens", "generation_tokens_total", "Tokens generated."),
    ("slipway_llm_prefix_cache_hit_tokens", "prefix_cache_hit_tokens_total",
     "Prompt tokens served from the prefix cache."),
    ("slipway_llm_prefix_cache_queried_tokens", "prefix_cache_query_tokens_total",
     "Prompt tokens looked up in the prefix cache."),
    ("slipway_llm_num_preemptions", "num_preemptions", "Sequences preempted for lack of KV-cache blocks."),
    ("slipway_llm_spec_draft_tokens", "spec_draft_tokens_total", "Speculative draft tokens verified."),
    ("slipway_llm_spec_accepted_tokens", "spec_accepted_tokens_total", "Speculative draft tokens accepted."),
)
HISTOGRAMS = (
    ("slipway_llm_time_to_first_token_seconds", "time_to_first_token_seconds",
     "Time from a request's arrival at the engine to its first token."),
    ("slipway_llm_inter_token_latency_seconds", "inter_token_latency_seconds",
     "Time between a request's successive tokens, observed once per token."),
    ("slipway_llm_e2e_request_latency_seconds", "e2e_request_latency_seconds",
     "Time from a request's arrival at the engine to its last token, for requests that finished."),
)


class HistogramLike(Protocol):
    """What a runtime's latency histogram snapshot offers (`slipway.engine.async_engine.HistogramSnapshot`)."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float
    count: int


class LlmEngineCollector:
    """Yields the `slipway_llm_*` families from the runtime `runtime()` returns (None: not loaded)."""

    def __init__(self, runtime: Callable[[], Any], model: str) -> None:
        self._runtime = runtime
        self._labels = [model]

    def describe(self) -> Iterator[Metric]:
        for families in _families():
            yield from families

    def collect(self) -> Iterator[Metric]:
        runtime = self._runtime()
        if not isinstance(runtime, LlmRuntime):
            return
        try:
            stats = runtime.engine_stats()
            histograms = runtime.latency_histograms()
        except Exception:  # noqa: BLE001 - a broken read loses the engine series, not /metrics
            log.warning("could not read the engine's figures for /metrics", exc_info=True)
            return
        yield from self._families(stats, histograms)

    def _families(self, stats: Mapping[str, Any], histograms: Mapping[str, HistogramLike]) -> Iterator[Metric]:
        gauges, counters, latencies = _families()
        for family, (_, key, _) in zip(gauges, GAUGES):
            if isinstance(stats.get(key), (int, float)):
                family.add_metric(self._labels, float(stats[key]))
                yield family
        for family, (_, key, _) in zip(counters, COUNTERS):
            if isinstance(stats.get(key), (int, float)):
                family.add_metric(self._labels, float(stats[key]))
                yield family
        for family, (_, key, _) in zip(latencies, HISTOGRAMS):
            histogram = histograms.get(key)
            if histogram is not None:
                family.add_metric(self._labels, _cumulative_buckets(histogram), histogram.sum)
                yield family


def _families() -> tuple[list[GaugeMetricFamily], list[CounterMetricFamily], list[HistogramMetricFamily]]:
    """Empty families of every engine metric, in the order of the tables above."""
    return ([GaugeMetricFamily(name, text, labels=LABELS) for name, _, text in GAUGES],
            [CounterMetricFamily(name, text, labels=LABELS) for name, _, text in COUNTERS],
            [HistogramMetricFamily(name, text, labels=LABELS) for name, _, text in HISTOGRAMS])


def _cumulative_buckets(histogram: HistogramLike) -> list[tuple[str, float]]:
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*histogram.bounds, float("inf")), histogram.counts):
        running += count
        buckets.append((floatToGoString(bound), float(running)))
    return buckets
