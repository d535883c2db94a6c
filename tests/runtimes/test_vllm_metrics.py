"""slipway.runtimes.vllm_metrics: vLLM's Prometheus page mapped to the /stats engine keys."""

from __future__ import annotations

import pytest

from slipway.runtimes.vllm_metrics import map_vllm_metrics, parse_samples

# Lines as vLLM 0.32 writes them (one engine), with the histogram and _created noise around them.
VLLM_0_32_PAGE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="smol"} 3.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="smol"} 1.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="smol",reason="capacity"} 1.0
vllm:kv_cache_usage_perc{engine="0",model_name="smol"} 0.125
vllm:prefix_cache_queries_total{engine="0",model_name="smol"} 64.0
vllm:prefix_cache_queries_created{engine="0",model_name="smol"} 1.7955228732083597e+09
vllm:prefix_cache_hits_total{engine="0",model_name="smol"} 16.0
vllm:prompt_tokens_total{engine="0",model_name="smol"} 64.0
vllm:prompt_tokens_created{engine="0",model_name="smol"} 1.7955228732083597e+09
vllm:generation_tokens_total{engine="0",model_name="smol"} 14.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="smol"} 0.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="smol"} 0.41
python_gc_objects_collected_total{generation="0"} 12345.0
"""


def test_a_vllm_0_32_page_maps_to_the_engine_keys():
    assert map_vllm_metrics(VLLM_0_32_PAGE) == {
        "running": 3, "waiting": 1, "kv_usage": 0.125,
        "prompt_tokens_total": 64, "generation_tokens_total": 14,
        "prefix_cache_hit_tokens_total": 16, "prefix_cache_query_tokens_total": 64,
        "prefix_cache_hit_rate": 0.25,
    }


def test_counters_are_ints_and_usage_a_float():
    stats = map_vllm_metrics(VLLM_0_32_PAGE)
    assert isinstance(stats["prompt_tokens_total"], int) and isinstance(stats["running"], int)
    assert isinstance(stats["kv_usage"], float)


def test_older_vllm_names_are_mapped_too():
    page = (
        'vllm:num_requests_running{model_name="m"} 2.0\n'
        'vllm:gpu_cache_usage_perc{model_name="m"} 0.5\n'
        'vllm:gpu_prefix_cache_hits_total{model_name="m"} 7.0\n'
        'vllm:gpu_prefix_cache_queries_total{model_name="m"} 10.0\n'
    )
    stats = map_vllm_metrics(page)
    assert stats["running"] == 2 and stats["kv_usage"] == 0.5
    assert stats["prefix_cache_hit_tokens_total"] == 7 and stats["prefix_cache_hit_rate"] == pytest.approx(0.7)


def test_the_newest_name_wins_when_both_are_exported():
    page = 'vllm:kv_cache_usage_perc{e="0"} 0.2\nvllm:gpu_cache_usage_perc{e="0"} 0.9\n'
    assert map_vllm_metrics(page)["kv_usage"] == 0.2


def test_engines_are_summed_and_kv_usage_is_their_mean():
    page = (
        'vllm:num_requests_running{engine="0",model_name="m"} 2.0\n'
        'vllm:num_requests_running{engine="1",model_name="m"} 3.0\n'
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2\n'
        'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.4\n'
        'vllm:prompt_tokens_total{engine="0",model_name="m"} 10.0\n'
        'vllm:prompt_tokens_total{engine="1",model_name="m"} 5.0\n'
    )
    stats = map_vllm_metrics(page)
    assert stats["running"] == 5 and stats["prompt_tokens_total"] == 15
    assert stats["kv_usage"] == pytest.approx(0.3)


def test_an_empty_page_reports_zeros_and_no_prefix_keys():
    assert map_vllm_metrics("") == {"running": 0, "waiting": 0, "kv_usage": 0.0,
                                    "prompt_tokens_total": 0, "generation_tokens_total": 0}


def test_no_hit_rate_before_the_first_prefix_query():
    page = 'vllm:prefix_cache_hits_total{e="0"} 0.0\nvllm:prefix_cache_queries_total{e="0"} 0.0\n'
    stats = map_vllm_metrics(page)
    assert stats["prefix_cache_hit_tokens_total"] == 0 and "prefix_cache_hit_rate" not in stats


def test_lines_without_labels_timestamps_and_junk_are_handled():
    page = (
        "vllm:num_requests_running 4.0 1700000000000\n"
        'vllm:num_requests_waiting{model_name="has } brace"} 6.0\n'
        "vllm:generation_tokens_total{e=\"0\"} not-a-number\n"
        "vllm:prompt_tokens_total\n"
    )
    samples = parse_samples(page)
    assert samples == {"vllm:num_requests_running": [4.0], "vllm:num_requests_waiting": [6.0]}
