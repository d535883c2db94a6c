"""A kind `llm` replica over a tiny random Llama, on real HTTP: the engine's `slipway_llm_*`
metrics, the same figures and the cached block summary in /stats, and requests whose client
disconnects before the answer aborted in the engine at once."""

from __future__ import annotations

import json
import socket
import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from transformers import AutoTokenizer

from slipway.routing import HASH_MASK, block_hash_chain
from slipway.server.app import ReplicaApp
from slipway.spec.package import parse_package
from tests.engine.conftest import _save_model
from tests.server.conftest import InThreadReplica

MAX_MODEL_LEN = 512
BLOCK_SIZE = 16
MAX_CACHED_BLOCK_HASHES = 8
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")
HELLO = [{"role": "user", "content": "hello world"}]

HISTOGRAMS = ("slipway_llm_time_to_first_token_seconds", "slipway_llm_inter_token_latency_seconds",
              "slipway_llm_e2e_request_latency_seconds")
GAUGES = ("slipway_llm_num_requests_running", "slipway_llm_num_requests_waiting", "slipway_llm_kv_blocks_used",
          "slipway_llm_kv_blocks_total", "slipway_llm_kv_blocks_cached", "slipway_llm_kv_cache_usage_ratio")
COUNTERS = ("slipway_llm_prompt_tokens", "slipway_llm_generation_tokens", "slipway_llm_prefix_cache_hit_tokens",
            "slipway_llm_prefix_cache_queried_tokens", "slipway_llm_num_preemptions",
            "slipway_llm_spec_draft_tokens", "slipway_llm_spec_accepted_tokens")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llm-replica")
    _save_model(folder, "llama", seed=11)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return folder


@pytest.fixture(scope="module")
def replica(tiny_llama):
    spec = parse_package(f"name: tiny\nkind: llm\nweights: {tiny_llama}\nresources: {{cpu: 1}}\n"
                         f"runtime: {{max_model_len: {MAX_MODEL_LEN}, max_num_seqs: 8, dtype: float32, "
                         f"block_size: {BLOCK_SIZE}}}\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLIPWAY_LLM_KV_CACHE_MEMORY", "8Mi")
        patch.setenv("SLIPWAY_LLM_MAX_CACHED_BLOCK_HASHES", str(MAX_CACHED_BLOCK_HASHES))
        with InThreadReplica(ReplicaApp(spec, tiny_llama)) as served:
            served.wait_ready()
            yield served


@pytest.fixture
def http(replica):
    with httpx.Client(base_url=replica.url, timeout=30) as client:
        yield client


@pytest.fixture
def client(replica):
    return openai.OpenAI(base_url=f"{replica.url}/v1", api_key="unused", max_retries=0)


def scrape(http: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (sample name, sorted labels)."""
    response = http.get("/metrics")
    assert response.status_code == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples, name: str, **labels: str) -> float:
    """A `slipway_llm_*` sample of this replica's model."""
    return samples[(name, tuple(sorted({"model": "tiny", **labels}.items())))]


def closed_requests(samples, route: str) -> float:
    """Requests of `route` whose client left before the answer (status 499)."""
    return samples.get(("slipway_replica_requests_total", (("route", route), ("status", "499"))), 0.0)


def wait_until(condition, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.005)


# -- /metrics ------------------------------------------------------------------------------------


def test_every_engine_metric_is_exported_with_its_type(http):
    families = {family.name: family for family in text_string_to_metric_families(http.get("/metrics").text)}
    for name in HISTOGRAMS:
        assert families[name].type == "histogram"
        assert {s.labels.get("model") for s in families[name].samples} == {"tiny"}
    for name in GAUGES:
        assert families[name].type == "gauge"
    for name in COUNTERS:
        assert families[name].type == "counter"
        assert families[name].samples[0].name == f"{name}_total"
    # The replica's own metrics are still there beside them.
    assert {"slipway_replica_requests", "slipway_replica_in_flight"} <= set(families)


def test_latency_histograms_and_token_counters_count_every_request(http, client, tiny_llama):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    prompts = ["abc", "the end", "hello world!"]
    before = scrape(http)
    usages = []
    for prompt in prompts:
        answer = client.completions.create(model="tiny", prompt=prompt, max_tokens=5,
                                           extra_body={"ignore_eos": True})
        usages.append(answer.usage)
    stream = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=7, stream=True,
                                            stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    usages.append([chunk for chunk in stream][-1].usage)
    after = scrape(http)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    chat_ids = tokenizer.apply_chat_template(HELLO, add_generation_prompt=True, tokenize=True, return_dict=False)
    expected_prompt_tokens = [len(tokenizer(p).input_ids) for p in prompts] + [len(chat_ids)]
    assert [u.prompt_tokens for u in usages] == expected_prompt_tokens
    assert [u.completion_tokens for u in usages] == [5, 5, 5, 7]
    assert grew("slipway_llm_prompt_tokens_total") == sum(expected_prompt_tokens)
    assert grew("slipway_llm_prefix_cache_queried_tokens_total") == sum(expected_prompt_tokens)
    assert grew("slipway_llm_generation_tokens_total") == 5 + 5 + 5 + 7
    assert grew("slipway_llm_time_to_first_token_seconds_count") == 4
    assert grew("slipway_llm_e2e_request_latency_seconds_count") == 4
    # One observation per token after each request's first.
    assert grew("slipway_llm_inter_token_latency_seconds_count") == 4 + 4 + 4 + 6
    assert grew("slipway_llm_e2e_request_latency_seconds_sum") > grew("slipway_llm_time_to_first_token_seconds_sum") > 0
    assert value(after, "slipway_llm_e2e_request_latency_seconds_bucket", le="+Inf") == \
        value(after, "slipway_llm_e2e_request_latency_seconds_count")
    assert value(after, "slipway_llm_num_requests_running") == 0
    assert value(after, "slipway_llm_kv_blocks_used") == 0
    assert value(after, "slipway_llm_kv_blocks_total") > 0

    # /stats carries the same figures, with quantiles over the recent window.
    stats = http.get("/stats").json()
    assert stats["prompt_tokens_total"] == value(after, "slipway_llm_prompt_tokens_total")
    assert stats["generation_tokens_total"] == value(after, "slipway_llm_generation_tokens_total")
    assert stats["kv_blocks_total"] == value(after, "slipway_llm_kv_blocks_total")
    for name in ("time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds"):
        assert stats[name]["count"] == value(after, f"slipway_llm_{name}_count")
        assert 0 < stats[name]["p50"] <= stats[name]["p90"] <= stats[name]["p99"]


# -- /stats ---------------------------------------------------------------------------------------


def test_stats_keep_the_keys_the_control_plane_reads(http):
    stats = http.get("/stats").json()
    for key in ("running", "waiting", "kv_usage", "kv_blocks_used", "kv_blocks_total", "prompt_tokens_total",
                "generation_tokens_total", "prefix_cache_hit_rate", "in_flight", "ready", "requests_total",
                "engine", "engine_alive", "kv_block_size", "cached_block_hashes"):
        assert key in stats, key
    assert stats["engine"] == "builtin" and stats["kv_block_size"] == BLOCK_SIZE


def test_cached_block_hashes_are_the_routers_block_hash_chain(http, client):
    prompt = list(range(40, 40 + 3 * BLOCK_SIZE + 5))  # three full blocks and a partial one
    client.completions.create(model="tiny", prompt=prompt, max_tokens=1)
    cached = http.get("/stats").json()["cached_block_hashes"]
    chain = list(block_hash_chain(prompt, BLOCK_SIZE))
    assert len(chain) == 3
    # The latest request's blocks are the most recent, its first block first of all.
    assert cached[:3] == chain
    assert all(isinstance(h, int) and 0 <= h <= HASH_MASK for h in cached)

    # Served again, the prompt's blocks come from the cache, and the summary stays bounded.
    again = client.completions.create(model="tiny", prompt=prompt, max_tokens=1)
    assert again.usage.prompt_tokens_details.cached_tokens == 3 * BLOCK_SIZE
    for start in range(100, 100 + 4 * 2 * BLOCK_SIZE, 2 * BLOCK_SIZE):
        client.completions.create(model="tiny", prompt=list(range(start, start + 2 * BLOCK_SIZE + 1)), max_tokens=1)
    stats = http.get("/stats").json()
    assert len(stats["cached_block_hashes"]) == MAX_CACHED_BLOCK_HASHES < stats["kv_blocks_cached"]
    newest = list(range(100 + 3 * 2 * BLOCK_SIZE, 100 + 4 * 2 * BLOCK_SIZE + 1))
    assert stats["cached_block_hashes"][:2] == list(block_hash_chain(newest, BLOCK_SIZE))


# -- a client that leaves ----------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "body", "route"), [
    ("/v1/completions", {"model": "tiny", "prompt": "abc", "max_tokens": 400, "ignore_eos": True}, "completions"),
    ("/v1/chat/completions", {"model": "tiny", "messages": HELLO, "max_tokens": 400, "ignore_eos": True},
     "chat.completions"),
])
def test_a_whole_answer_is_aborted_when_its_client_disconnects(replica, http, path, body, route):
    engine = replica.app.runtime.engine
    closed_before = closed_requests(scrape(http), route)
    generated_before = engine.stats()["generated_tokens"]
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", replica.port))
    sock.sendall(f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                 f"content-length: {len(payload)}\r\n\r\n".encode() + payload)
    wait_until(lambda: engine.stats()["running"] == 1 and engine.stats()["generated_tokens"] > generated_before,
               10, "the request never started generating")
    sock.close()
    left_at = time.monotonic()
    wait_until(lambda: engine.stats()["running"] == 0 and engine.stats()["waiting"] == 0, 2,
               "the engine kept the request after its client left")
    stopped_after = time.monotonic() - left_at
    assert engine.stats()["kv_blocks_used"] == 0, "the aborted request's blocks were not freed"
    generated = engine.stats()["generated_tokens"]
    time.sleep(0.1)
    assert engine.stats()["generated_tokens"] == generated < generated_before + 400
    assert stopped_after < 1.0
    wait_until(lambda: replica.app.state.in_flight == 0, 2, "the request stayed in flight")
    assert closed_requests(scrape(http), route) == closed_before + 1
