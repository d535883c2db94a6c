"""The builtin llm runtime over a tiny random Llama: OpenAI shapes, 400s, exact usage, seeds,
streams and aborts; the last tests serve it over real HTTP to the official openai client."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from pathlib import Path

import openai
import pytest
import uvicorn

from slipway.errors import RuntimeLoadError, SpecError
from slipway.routing import block_hash_chain
from slipway.runtimes.base import BadRequestError
from slipway.runtimes.llm_builtin import BuiltinLlmConfig, BuiltinLlmRuntime, _in_own_thread
from slipway.runtimes.vllm_metrics import map_vllm_metrics
from slipway.server.app import ReplicaApp
from slipway.spec.package import parse_package
from tests.engine.conftest import _save_model, hf_greedy

MAX_MODEL_LEN = 128
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")
HELLO = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """(folder, HF model): a random 2-layer Llama with a one-character-per-token tokenizer and a chat template."""
    folder = tmp_path_factory.mktemp("tiny-chat-llama")
    model = _save_model(folder, "llama", seed=7)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return folder, model


def package_spec(folder: Path, name: str = "tiny"):
    return parse_package(f"name: {name}\nkind: llm\nweights: {folder}\nresources: {{cpu: 1}}\n"
                         f"runtime: {{max_model_len: {MAX_MODEL_LEN}, max_num_seqs: 8, dtype: float32}}\n")


@pytest.fixture
async def runtime(tiny_llama):
    folder, _ = tiny_llama
    loaded = BuiltinLlmRuntime(package_spec(folder), folder, config=BuiltinLlmConfig(kv_cache_memory="8Mi"))
    await loaded.load()
    yield loaded
    await loaded.close()


def chat_ids(runtime, messages) -> list[int]:
    return runtime.engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                        return_dict=False)


async def collect(stream) -> list[dict]:
    return [chunk async for chunk in stream]


async def test_load_sets_torch_threads_to_the_replicas_cores(tiny_llama, monkeypatch):
    import torch

    folder, _ = tiny_llama
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    spec = package_spec(folder).model_copy(update={"resources": package_spec(folder).resources.model_copy(
        update={"cpu": 1.5})})
    before = torch.get_num_threads()
    runtime = BuiltinLlmRuntime(spec, folder, config=BuiltinLlmConfig(kv_cache_memory="8Mi"))
    try:
        await runtime.load()
        # Threads started after load (the engine's among them) run with the replica's cores, 1.5 rounded up.
        seen: list[int] = []
        probe = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        probe.start()
        probe.join()
        assert seen == [min(2, os.cpu_count() or 1)]
    finally:
        await runtime.close()
        torch.set_num_threads(before)


# -- whole answers -----------------------------------------------------------------------------


async def test_greedy_chat_matches_hf_and_counts_usage_exactly(runtime, tiny_llama):
    _, model = tiny_llama
    answer = await runtime.chat_completions({"model": "tiny", "messages": HELLO, "max_tokens": 12, "temperature": 0})
    prompt = chat_ids(runtime, HELLO)
    expected = hf_greedy(model, prompt, 12)
    assert answer["object"] == "chat.completion" and answer["id"].startswith("chatcmpl-")
    assert answer["model"] == "tiny" and isinstance(answer["created"], int)
    (choice,) = answer["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == runtime.engine.tokenizer.decode(expected, skip_special_tokens=True)
    assert choice["finish_reason"] == ("length" if len(expected) == 12 else "stop")
    assert choice["logprobs"] is None
    usage = answer["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (len(prompt), len(expected))
    assert usage["total_tokens"] == len(prompt) + len(expected)


async def test_max_completion_tokens_wins_and_ignore_eos_runs_to_length(runtime):
    answer = await runtime.chat_completions({"messages": HELLO, "max_tokens": 3, "max_completion_tokens": 9,
                                             "ignore_eos": True})
    assert answer["usage"]["completion_tokens"] == 9
    assert answer["choices"][0]["finish_reason"] == "length"


async def test_min_tokens_holds_off_the_end(runtime):
    """An end-of-sequence token ends a free completion early; min_tokens keeps it from being sampled."""
    for seed in range(200):
        body = {"prompt": [5 + seed % 50, 6, 7], "max_tokens": 40, "temperature": 1.0, "seed": seed}
        free = await runtime.completions(body)
        if free["choices"][0]["finish_reason"] == "stop" and free["usage"]["completion_tokens"] < 10:
            break
    else:
        pytest.fail("no seed ended early; the test needs a prompt that stops")
    held = await runtime.completions({**body, "min_tokens": 12})
    assert held["usage"]["completion_tokens"] >= 12


async def test_completions_take_every_prompt_form_and_count_each(runtime):
    tokenizer = runtime.engine.tokenizer
    texts = ["abc", "hello"]
    for prompt, lengths in [
        ("abc", [len(tokenizer("abc").input_ids)]),
        (texts, [len(tokenizer(t).input_ids) for t in texts]),
        ([5, 6, 7, 8], [4]),
        ([[5, 6], [7, 8, 9]], [2, 3]),
    ]:
        answer = await runtime.completions({"prompt": prompt, "max_tokens": 4, "n": 2, "ignore_eos": True})
        assert answer["object"] == "text_completion" and answer["id"].startswith("cmpl-")
        assert [c["index"] for c in answer["choices"]] == list(range(2 * len(lengths)))
        assert all(c["finish_reason"] == "length" and isinstance(c["text"], str) for c in answer["choices"])
        assert answer["usage"]["prompt_tokens"] == sum(lengths)
        assert answer["usage"]["completion_tokens"] == 4 * 2 * len(lengths)


async def test_completions_default_to_16_tokens_and_echo_puts_the_prompt_first(runtime):
    answer = await runtime.completions({"prompt": "hello", "ignore_eos": True, "echo": True})
    assert answer["usage"]["completion_tokens"] == 16
    assert answer["choices"][0]["text"].startswith("hello")


async def test_same_seed_same_text_and_another_seed_differs(runtime):
    body = {"prompt": "the end", "max_tokens": 24, "temperature": 1.0, "ignore_eos": True}
    first = await runtime.completions({**body, "seed": 42})
    again = await runtime.completions({**body, "seed": 42})
    assert first["choices"][0]["text"] == again["choices"][0]["text"]
    others = [(await runtime.completions({**body, "seed": seed}))["choices"][0]["text"] for seed in (1, 2, 3)]
    assert any(text != first["choices"][0]["text"] for text in others)


async def test_chat_logprobs_follow_openais_shape(runtime):
    answer = await runtime.chat_completions({"messages": HELLO, "max_tokens": 5, "ignore_eos": True,
                                             "logprobs": True, "top_logprobs": 3, "temperature": 0})
    content = answer["choices"][0]["logprobs"]["content"]
    assert len(content) == 5
    for item in content:
        assert set(item) == {"token", "logprob", "bytes", "top_logprobs"}
        assert item["logprob"] <= 0 and item["bytes"] == list(item["token"].encode())
        assert len(item["top_logprobs"]) == 3
        # Greedy: the chosen token is the most likely one.
        assert item["top_logprobs"][0]["token"] == item["token"]
    assert "".join(item["token"] for item in content) == answer["choices"][0]["message"]["content"]


async def test_completion_logprobs_carry_tokens_and_text_offsets(runtime):
    answer = await runtime.completions({"prompt": "abc", "max_tokens": 6, "ignore_eos": True, "logprobs": 2})
    choice = answer["choices"][0]
    logprobs = choice["logprobs"]
    assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == len(logprobs["top_logprobs"]) == 6
    assert all(len(top) <= 2 for top in logprobs["top_logprobs"])
    assert "".join(logprobs["tokens"]) == choice["text"]
    expected_offsets = [sum(len(t) for t in logprobs["tokens"][:i]) for i in range(6)]
    assert logprobs["text_offset"] == expected_offsets


async def test_predict_takes_either_shape(runtime):
    chat = await runtime.predict({"messages": HELLO, "max_tokens": 2})
    text = await runtime.predict({"prompt": "abc", "max_tokens": 2})
    assert chat["object"] == "chat.completion" and text["object"] == "text_completion"
    with pytest.raises(BadRequestError) as caught:
        await runtime.predict({"input": "x"})
    assert caught.value.param == "messages"


# -- 400s ----------------------------------------------------------------------------------------

LONG = "x" * (MAX_MODEL_LEN + 10)

BAD_CHAT = [
    ({"messages": HELLO, "max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
    ({"messages": HELLO, "max_completion_tokens": -3}, "max_completion_tokens", "1 or more"),
    ({"messages": HELLO, "n": 0}, "n", "1 to 16"),
    ({"messages": HELLO, "n": 17}, "n", "1 to 16"),
    ({"messages": []}, "messages", "at least 1"),
    ({"messages": "hello"}, "messages", "valid list"),
    ({}, "messages", "missing"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role", "'user'"),
    ({"messages": [{"role": "user"}]}, "messages[0]", "needs 'content'"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content", "text only"),
    ({"messages": HELLO, "temperature": 2.5}, "temperature", "0 (greedy) to 2"),
    ({"messages": HELLO, "top_p": 0}, "top_p", "above 0"),
    ({"messages": HELLO, "top_logprobs": 2}, "top_logprobs", "logprobs: true"),
    ({"messages": HELLO, "top_logprobs": 21, "logprobs": True}, "top_logprobs", "0 to 20"),
    ({"messages": HELLO, "stream_options": {"include_usage": True}}, "stream_options", "stream: true"),
    ({"messages": HELLO, "stop": ["s"] * 17}, "stop", "at most 16"),
    ({"messages": HELLO, "max_completion_tokens": 3, "min_tokens": 4}, "min_tokens", "exceeds max_completion_tokens (3)"),
    ({"messages": HELLO, "min_tokens": -1}, "min_tokens", "greater than or equal to 0 (got -1)"),
    ({"messages": HELLO, "tools": [{"type": "function"}]}, "tools", "not supported"),
    ({"messages": HELLO, "logit_bias": {"5": 1.0}}, "logit_bias", "not supported"),
    ({"messages": HELLO, "response_format": {"type": "json_object"}}, "response_format", "text"),
    ({"messages": [{"role": "user", "content": LONG}]}, "messages", f"max_model_len) is {MAX_MODEL_LEN}"),
]


@pytest.mark.parametrize(("body", "param", "says"), BAD_CHAT, ids=[f"{p}-{i}" for i, (_, p, _) in enumerate(BAD_CHAT)])
async def test_bad_chat_requests_are_400s_naming_the_parameter(runtime, body, param, says):
    with pytest.raises(BadRequestError) as caught:
        await runtime.chat_completions(body)
    assert caught.value.status_code == 400 and caught.value.param == param
    assert says in caught.value.message and param.split("[")[0] in caught.value.message


async def test_prompt_plus_max_tokens_over_the_context_names_both_numbers(runtime):
    prompt_len = len(chat_ids(runtime, HELLO))
    with pytest.raises(BadRequestError) as caught:
        await runtime.chat_completions({"messages": HELLO, "max_tokens": MAX_MODEL_LEN})
    assert caught.value.param == "max_tokens" and caught.value.code == "context_length_exceeded"
    message = caught.value.message
    assert f"{prompt_len} tokens" in message and f"asks for {MAX_MODEL_LEN} more" in message
    assert f"at most {MAX_MODEL_LEN - prompt_len}" in message


BAD_COMPLETIONS = [
    ({"prompt": []}, "prompt", "empty"),
    ({"prompt": ""}, "prompt", "empty"),
    ({"prompt": [1, 99999]}, "prompt", "outside [0, 256)"),
    ({"prompt": {"text": "x"}}, "prompt", "a list of token ids"),
    ({"prompt": ["a"] * 17}, "prompt", "at most 16"),
    ({"prompt": "a", "max_tokens": 0}, "max_tokens", "1 or more"),
    ({"prompt": "a", "logprobs": 21}, "logprobs", "0 to 20"),
    ({"prompt": "a", "suffix": "z"}, "suffix", "not supported"),
    ({"prompt": "a", "best_of": 3}, "best_of", "equal to n"),
    ({"prompt": "a", "echo": True, "logprobs": 1}, "echo", "drop one"),
    ({"prompt": ["a"] * 5, "n": 16}, "n", "at most 64"),
    ({"prompt": "a", "max_tokens": MAX_MODEL_LEN}, "max_tokens", f"is {MAX_MODEL_LEN} tokens"),
    ({"prompt": "a", "max_tokens": 2, "min_tokens": 5}, "min_tokens", "exceeds max_tokens (2)"),
]


@pytest.mark.parametrize(("body", "param", "says"), BAD_COMPLETIONS,
                         ids=[f"{p}-{i}" for i, (_, p, _) in enumerate(BAD_COMPLETIONS)])
async def test_bad_completion_requests_are_400s_naming_the_parameter(runtime, body, param, says):
    with pytest.raises(SpecError) as caught:
        await runtime.completions(body)
    assert caught.value.status_code == 400 and getattr(caught.value, "param", None) == param
    assert says in caught.value.message


# -- streams -------------------------------------------------------------------------------------


async def test_a_chat_stream_has_openais_chunks_and_the_same_text(runtime):
    body = {"messages": HELLO, "max_tokens": 10, "temperature": 0}
    whole = await runtime.chat_completions(body)
    chunks = await collect(await runtime.chat_completions({**body, "stream": True,
                                                           "stream_options": {"include_usage": True}}))
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    first, *middle, finish, last = chunks
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["choices"][0]["finish_reason"] is None and set(c["choices"][0]["delta"]) == {"content"}
               for c in middle)
    assert finish["choices"][0]["delta"] == {} and finish["choices"][0]["finish_reason"] == \
        whole["choices"][0]["finish_reason"]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert last["choices"] == []
    counts = ("prompt_tokens", "completion_tokens", "total_tokens")
    assert [last["usage"][k] for k in counts] == [whole["usage"][k] for k in counts]
    # The second time, the prompt's full blocks came from the prefix cache.
    assert last["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    assert "".join(c["choices"][0]["delta"]["content"] for c in middle) == whole["choices"][0]["message"]["content"]


async def test_a_stream_without_include_usage_has_no_usage_key(runtime):
    chunks = await collect(await runtime.completions({"prompt": "abc", "max_tokens": 3, "stream": True}))
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


async def test_a_multi_prompt_stream_finishes_every_choice_and_counts_all_tokens(runtime):
    chunks = await collect(await runtime.completions({
        "prompt": ["abc", "hello"], "n": 2, "max_tokens": 5, "ignore_eos": True, "logprobs": 0, "stream": True,
        "stream_options": {"include_usage": True}}))
    choices = [c["choices"][0] for c in chunks if c["choices"]]
    assert sorted(c["index"] for c in choices if c["finish_reason"]) == [0, 1, 2, 3]
    tokens = {i: sum(len(c["logprobs"]["tokens"]) for c in choices if c["index"] == i and c["logprobs"])
              for i in range(4)}
    assert tokens == {0: 5, 1: 5, 2: 5, 3: 5}
    assert chunks[-1]["usage"]["completion_tokens"] == 20


async def test_closing_a_stream_aborts_its_engine_request_at_once(runtime):
    stream = await runtime.completions({"prompt": "a", "max_tokens": 120, "ignore_eos": True, "stream": True})
    for _ in range(3):
        await stream.__anext__()
    await stream.aclose()
    deadline = time.monotonic() + 2
    while runtime.stats()["running"] or runtime.stats()["waiting"]:
        assert time.monotonic() < deadline, "the engine kept the request after the stream closed"
        await asyncio.sleep(0.01)
    generated = runtime.stats()["generation_tokens_total"]
    await asyncio.sleep(0.2)
    assert runtime.stats()["generation_tokens_total"] == generated < 120


async def test_stats_keep_the_vllm_keys_and_count_tokens(runtime):
    await runtime.completions({"prompt": "abcd" * 5, "max_tokens": 3, "ignore_eos": True})
    stats = runtime.stats()
    assert set(map_vllm_metrics("")) <= set(stats)
    assert stats["engine"] == "builtin" and stats["engine_alive"] is True
    assert stats["prompt_tokens_total"] >= 4 and stats["generation_tokens_total"] >= 3
    assert 0 < stats["kv_blocks_total"] and 0.0 <= stats["kv_usage"] <= 1.0
    assert {"prefix_cache_hit_rate", "spec_acceptance_rate", "kv_blocks_used"} <= set(stats)
    # Latency quantiles over the recent window, and the cached block summary (the last request's first).
    assert set(stats["time_to_first_token_seconds"]) == {"p50", "p90", "p99", "count"}
    assert stats["e2e_request_latency_seconds"]["count"] >= 1
    prompt = runtime.engine.tokenizer("abcd" * 5)["input_ids"]
    assert len(prompt) >= 16 and stats["cached_block_hashes"][:len(prompt) // 16] == list(block_hash_chain(prompt, 16))
    assert "cached_block_hashes" not in runtime.engine_stats(), "/metrics reads engine_stats at every scrape"


async def test_stats_before_load_and_the_summary_limit(tiny_llama):
    folder, _ = tiny_llama
    config = BuiltinLlmConfig.from_env({"SLIPWAY_LLM_MAX_CACHED_BLOCK_HASHES": "1",
                                        "SLIPWAY_LLM_KV_CACHE_MEMORY": "8Mi"})
    runtime = BuiltinLlmRuntime(package_spec(folder), folder, config=config)
    assert runtime.stats()["cached_block_hashes"] == [] and runtime.stats()["kv_block_size"] == 16
    assert runtime.latency_histograms() == {}
    await runtime.load()
    try:
        await runtime.completions({"prompt": list(range(3, 40)), "max_tokens": 1})
        assert len(runtime.stats()["cached_block_hashes"]) == 1
    finally:
        await runtime.close()
    with pytest.raises(RuntimeLoadError, match="max_cached_block_hashes"):
        BuiltinLlmConfig.from_env({"SLIPWAY_LLM_MAX_CACHED_BLOCK_HASHES": "-1"})


# -- over HTTP -----------------------------------------------------------------------------------


class ReplicaServer:
    """The replica's ASGI app served by uvicorn on a free 127.0.0.1 port, in a thread."""

    def __init__(self, app: ReplicaApp) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "ReplicaServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def served(tiny_llama, monkeypatch):
    folder, _ = tiny_llama
    monkeypatch.setenv("SLIPWAY_LLM_KV_CACHE_MEMORY", "8Mi")
    app = ReplicaApp(package_spec(folder), folder)
    with ReplicaServer(app) as server:
        deadline = time.monotonic() + 30
        while not app.state.ready:
            assert app.state.load_error is None, app.state.load_error
            assert time.monotonic() < deadline, "the replica did not load"
            time.sleep(0.02)
        yield app, server.url


def test_the_openai_client_streams_and_a_client_leaving_aborts_the_request(served):
    app, url = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=80, stream=True,
                                            extra_body={"ignore_eos": True})
    chunks = [next(stream) for _ in range(4)]
    assert chunks[0].choices[0].delta.role == "assistant"
    stream.close()
    deadline = time.monotonic() + 3
    while app.runtime.stats()["running"] or app.state.in_flight:
        assert time.monotonic() < deadline, "the engine kept generating after the client left"
        time.sleep(0.01)
    assert app.runtime.stats()["generation_tokens_total"] < 80


def test_over_http_a_bad_request_is_an_openai_400_with_its_param(served):
    _, url = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tiny", prompt="abc", n=40)
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == "n" and "1 to 16" in caught.value.body["message"]
    answer = client.completions.create(model="tiny", prompt="abc", max_tokens=3, extra_body={"ignore_eos": True})
    assert answer.usage.completion_tokens == 3 and answer.choices[0].finish_reason == "length"


async def test_loading_work_runs_in_a_thread_that_ends_with_it():
    ran_in: list[threading.Thread] = []

    def work() -> int:
        ran_in.append(threading.current_thread())
        return 7

    assert await _in_own_thread(work) == 7
    assert ran_in[0] is not threading.current_thread()
    ran_in[0].join(timeout=5)
    assert not ran_in[0].is_alive(), "the thread (and any OpenMP pool it made) is gone"

    def failing() -> None:
        raise ValueError("no such weights")

    with pytest.raises(ValueError, match="no such weights"):
        await _in_own_thread(failing)
