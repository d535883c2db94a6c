"""vLLM's Prometheus /metrics text -> the engine keys every `kind: llm` replica reports in /stats.

    key                             vLLM series (newest name first; summed over its engines)
    running                         vllm:num_requests_running
    waiting                         vllm:num_requests_waiting
    kv_usage                        vllm:kv_cache_usage_perc | vllm:gpu_cache_usage_perc  (0..1, mean)
    prompt_tokens_total             vllm:prompt_tokens_total
    generation_tokens_total         vllm:generation_tokens_total
    prefix_cache_hit_tokens_total   vllm:prefix_cache_hits_total | vllm:gpu_prefix_cache_hits_total
    prefix_cache_query_tokens_total vllm:prefix_cache_queries_total | vllm:gpu_prefix_cache_queries_total
    prefix_cache_hit_rate           hits / queries, when vLLM reports both and queries > 0

The prefix-cache keys appear only when vLLM exports them. The scan looks only at the lines it
needs, so a poll every second of a page with hundreds of histogram lines stays cheap.
"""

from __future__ import annotations

from typing import Any

# key -> candidate series names, in order of preference.
_SUMMED: dict[str, tuple[str, ...]] = {
    "running": ("vllm:num_requests_running",),
    "waiting": ("vllm:num_requests_waiting",),
    "prompt_tokens_total": ("vllm:prompt_tokens_total",),
    "generation_tokens_total": ("vllm:generation_tokens_total",),
    "prefix_cache_hit_tokens_total": ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
    "prefix_cache_query_tokens_total": ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
}
_AVERAGED: dict[str, tuple[str, ...]] = {
    "kv_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
}
_ALWAYS_PRESENT = ("running", "waiting", "kv_usage", "prompt_tokens_total", "generation_tokens_total")
_WANTED = frozenset(name for names in (*_SUMMED.values(), *_AVERAGED.values()) for name in names)


def parse_samples(text: str) -> dict[str, list[float]]:
    """Values of the wanted series in Prometheus text, one per label set; other lines are skipped."""
    samples: dict[str, list[float]] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace != -1 and (space == -1 or brace < space):
            name, rest = line[:brace], line[line.rfind("}") + 1:]
        elif space != -1:
            name, rest = line[:space], line[space:]
        else:
            continue
        fields = rest.split()
        if name not in _WANTED or not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:  # a malformed line is one lost sample, not a lost poll
            continue
        samples.setdefault(name, []).append(value)
    return samples


def map_vllm_metrics(text: str) -> dict[str, Any]:
    """The /stats engine keys for one scrape of vLLM's /metrics (zeros for a page without them)."""
    samples = parse_samples(text)
    stats: dict[str, Any] = {}
    for key, names in _SUMMED.items():
        values = _first_present(samples, names)
        if values is not None:
            total = sum(values)
            stats[key] = int(total) if total.is_integer() else total
    for key, names in _AVERAGED.items():
        values = _first_present(samples, names)
        if values:
            stats[key] = sum(values) / len(values)
    for key in _ALWAYS_PRESENT:
        stats.setdefault(key, 0.0 if key == "kv_usage" else 0)
    hits, queries = stats.get("prefix_cache_hit_tokens_total"), stats.get("prefix_cache_query_tokens_total")
    if hits is not None and queries:
        stats["prefix_cache_hit_rate"] = hits / queries
    return stats


def _first_present(samples: dict[str, list[float]], names: tuple[str, ...]) -> list[float] | None:
    for name in names:
        if name in samples:
            return samples[name]
    return None
