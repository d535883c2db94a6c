"""slipway.server.llm_metrics: the `slipway_llm_*` families read from a runtime at each scrape."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from slipway.engine.async_engine import HistogramSnapshot
from slipway.runtimes.llm import LlmRuntime
from slipway.server.metrics import ReplicaMetrics


class FixedLlm(LlmRuntime):
    """An llm runtime whose figures the test sets."""

    def __init__(self, stats: dict[str, Any], histograms: dict[str, HistogramSnapshot] | None = None) -> None:
        self.figures = stats
        self.histograms = histograms or {}

    async def load(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        if self.figures is None:
            raise RuntimeError("the engine is gone")
        return {**self.figures, "cached_block_hashes": [1, 2, 3]}

    def engine_stats(self) -> dict[str, Any]:
        return {key: value for key, value in self.stats().items() if key != "cached_block_hashes"}

    def latency_histograms(self) -> dict[str, HistogramSnapshot]:
        return self.histograms


def samples(metrics: ReplicaMetrics) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics.render().decode()) for s in family.samples}


def watched(runtime: LlmRuntime | None) -> ReplicaMetrics:
    metrics = ReplicaMetrics()
    metrics.watch_llm_engine(lambda: runtime, model="m")
    return metrics


def test_nothing_before_the_runtime_loads():
    names = {name for name, _ in samples(watched(None))}
    assert not any(name.startswith("slipway_llm_") for name in names)
    assert "slipway_replica_in_flight" in names


def test_counters_and_gauges_are_the_runtimes_figures_and_absent_keys_are_absent_series():
    # The vllm engine reports these keys and no KV block counts or histograms.
    runtime = FixedLlm({"running": 3, "waiting": 1, "kv_usage": 0.25, "prompt_tokens_total": 120,
                        "generation_tokens_total": 48, "engine": "vllm", "engine_alive": True})
    got = samples(watched(runtime))
    m = (("model", "m"),)
    assert got[("slipway_llm_num_requests_running", m)] == 3
    assert got[("slipway_llm_num_requests_waiting", m)] == 1
    assert got[("slipway_llm_kv_cache_usage_ratio", m)] == 0.25
    assert got[("slipway_llm_prompt_tokens_total", m)] == 120
    assert got[("slipway_llm_generation_tokens_total", m)] == 48
    assert ("slipway_llm_kv_blocks_total", m) not in got
    assert not any(name.startswith("slipway_llm_time_to_first_token") for name, _ in got)
    runtime.figures["prompt_tokens_total"] = 130  # read again at the next scrape, not cached
    assert samples(watched(runtime))[("slipway_llm_prompt_tokens_total", m)] == 130


def test_histograms_export_cumulative_buckets():
    snapshot = HistogramSnapshot(bounds=(0.1, 1.0), counts=(2, 0, 1), sum=5.3, count=3)
    got = samples(watched(FixedLlm({}, {"time_to_first_token_seconds": snapshot})))
    name = "slipway_llm_time_to_first_token_seconds"
    assert [got[(f"{name}_bucket", (("le", le), ("model", "m")))] for le in ("0.1", "1.0", "+Inf")] == [2, 2, 3]
    assert got[(f"{name}_count", (("model", "m"),))] == 3
    assert got[(f"{name}_sum", (("model", "m"),))] == 5.3


def test_a_failing_read_costs_the_engine_series_not_the_page():
    runtime = FixedLlm({"running": 1})
    runtime.figures = None
    names = {name for name, _ in samples(watched(runtime))}
    assert "slipway_replica_ready" in names and not any(n.startswith("slipway_llm_") for n in names)
