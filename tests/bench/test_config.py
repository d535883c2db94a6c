"""BenchConfig validation and the --goodput parser."""

from __future__ import annotations

import math

import pytest

from slipway.bench.config import BenchConfig, make_config, parse_goodput
from slipway.errors import SpecError


def test_goodput_parses_items_and_lists():
    assert parse_goodput(["ttft:500", "tpot:50"]) == {"ttft": 500.0, "tpot": 50.0}
    assert parse_goodput(["ttft:500,e2el:2000 tpot:12.5"]) == {"ttft": 500.0, "e2el": 2000.0, "tpot": 12.5}
    assert parse_goodput([]) == {}


@pytest.mark.parametrize("item", ["ttft", "ttft:", "ttft:abc", "itl:5", "ttft:-1", "ttft:0"])
def test_goodput_rejects_what_is_not_an_slo(item):
    with pytest.raises(SpecError, match="METRIC:MILLISECONDS"):
        parse_goodput([item])


def test_arrival_defaults_follow_the_trace(tmp_path):
    assert BenchConfig().arrival == "rate"
    trace = tmp_path / "t.csv"
    assert BenchConfig(trace=trace).arrival == "trace"
    assert BenchConfig(trace=trace, arrival="rate").arrival == "rate"


def test_trace_dataset_without_a_trace_is_refused_with_the_fix():
    with pytest.raises(SpecError, match=r"options: the trace dataset and trace arrivals need --trace PATH"):
        make_config(dataset="trace")


def test_every_invalid_field_is_listed():
    with pytest.raises(SpecError) as caught:
        make_config(num_prompts=0, request_rate=-1, endpoint="embeddings")
    assert [p.split(":")[0] for p in caught.value.problems] == ["endpoint", "num_prompts", "request_rate"]


def test_base_url_is_normalised_and_the_endpoint_appended():
    assert BenchConfig(base_url="http://127.0.0.1:9000/v1/").url == "http://127.0.0.1:9000/v1/chat/completions"
    assert BenchConfig(base_url="http://h:1", endpoint="completions").url == "http://h:1/v1/completions"
    with pytest.raises(SpecError, match="is not a URL"):
        make_config(base_url="127.0.0.1:8000")


def test_unknown_slo_metric_in_goodput_field_is_refused():
    with pytest.raises(SpecError, match="unknown SLO metric 'itl'"):
        make_config(goodput={"itl": 5})


def test_api_key_never_reaches_the_dump_and_inf_survives_json():
    config = BenchConfig(api_key="sk-slw-secret")
    assert "api_key" not in config.model_dump()
    text = config.model_dump_json()
    assert "sk-slw-secret" not in text
    assert math.isinf(BenchConfig.model_validate_json(text).request_rate)
