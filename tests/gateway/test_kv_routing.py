"""kv_aware end to end: a gateway in front of two real tiny-model replicas tokenizes prompts exactly as they
do, reads the KV blocks they report, and sends a prompt to the replica that holds its prefix, by those
reports alone (learn_routed off)."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from slipway.routing import KvAware, KvAwareConfig, block_hash_chain
from slipway.runtimes.openai_text import (
    chat_prompt_ids, completion_prompt_ids, parse_chat_request, parse_completion_request,
)
from slipway.server.app import ReplicaApp
from slipway.spec.package import parse_package
from tests.engine.conftest import VOCAB_SIZE, _save_model
from tests.gateway.conftest import INVOKE_A, deployment, world
from tests.server.conftest import InThreadReplica

BLOCK_SIZE = 8
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llm-kv-routing")
    _save_model(folder, "llama", seed=7)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return folder


@pytest.fixture(scope="module")
def llm_replicas(tiny_llama):
    spec = parse_package(f"name: tiny\nkind: llm\nweights: {tiny_llama}\nresources: {{cpu: 1}}\nruntime: "
                         f"{{max_model_len: 256, max_num_seqs: 4, dtype: float32, block_size: {BLOCK_SIZE}}}\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLIPWAY_LLM_KV_CACHE_MEMORY", "4Mi")
        with InThreadReplica(ReplicaApp(spec, tiny_llama, replica_id="a")) as first, \
                InThreadReplica(ReplicaApp(spec, tiny_llama, replica_id="b")) as second:
            first.wait_ready()
            second.wait_ready()
            yield [first, second]


@pytest.fixture
def kv_gateway(gateway, llm_replicas):
    """A gateway routing model 'echo' over the two replicas with kv_aware, its tokenizer ready."""
    gw = gateway(world(deployment("d-echo", "echo", [r.url for r in llm_replicas], routing="kv_aware")),
                 replica_stats_interval=0.05, replica_stats_timeout=2.0)
    wait_until(lambda: gw.app.tokenizers.get("d-echo") is not None, "the gateway never built the tokenizer")
    return gw


def wait_until(condition, message: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.01)


def served_by(replicas, send) -> int:
    """Index of the replica that answered what `send()` sent."""
    before = [r.app.state.requests_total for r in replicas]
    send()
    grew = [i for i, r in enumerate(replicas) if r.app.state.requests_total > before[i]]
    assert len(grew) == 1, grew
    return grew[0]


@pytest.mark.parametrize("body", [
    {"messages": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hello world"}]},
    {"prompt": "the end of the world"},
    {"prompt": [9, 8, 7, 6, 5, 4, 3, 2, 1]},
    {"prompt": ["abc", "def"]},
])
def test_the_gateway_computes_the_replicas_token_ids(kv_gateway, llm_replicas, body):
    engine_tokenizer = llm_replicas[0].app.runtime.engine.tokenizer
    if "messages" in body:
        expected = chat_prompt_ids(engine_tokenizer, parse_chat_request(body))
    else:
        expected = completion_prompt_ids(engine_tokenizer, parse_completion_request(body), VOCAB_SIZE)[0]
    prompt_tokenizer = kv_gateway.app.tokenizers.get("d-echo")
    assert prompt_tokenizer.block_size == BLOCK_SIZE
    assert prompt_tokenizer.token_ids(body) == expected


def test_the_blocks_a_replica_reports_are_the_gateways_hashes_of_the_prompt(kv_gateway, llm_replicas):
    client = openai.OpenAI(base_url=f"{kv_gateway.url}/v1", api_key=INVOKE_A, max_retries=0)
    messages = [{"role": "user", "content": "hello world " * 6}]
    index = served_by(llm_replicas, lambda: client.chat.completions.create(model="echo", messages=messages,
                                                                          max_tokens=2))
    ids = kv_gateway.app.tokenizers.get("d-echo").token_ids({"messages": messages})
    hashes = block_hash_chain(ids, BLOCK_SIZE)
    assert len(hashes) >= 5
    replica_id = f"d-echo-r{index}"
    reported = kv_gateway.app.replica_stats.cached_blocks
    wait_until(lambda: set(hashes) <= reported.get(replica_id, frozenset()),
               "the replica never reported the prompt's blocks as the gateway hashes them")


def test_a_shared_prefix_goes_where_the_replica_reports_it_cached(kv_gateway, llm_replicas):
    # Only what replicas report counts: nothing is learnt from this gateway's own choices.
    kv_gateway.app.table.deployments["d-echo"].policy = KvAware(KvAwareConfig(learn_routed=False))
    stats = kv_gateway.app.replica_stats.cached_blocks
    tokenizer = kv_gateway.app.tokenizers.get("d-echo")
    http = httpx.Client(base_url=kv_gateway.url, headers={"Authorization": f"Bearer {INVOKE_A}"}, timeout=30)

    def complete(prompt: str) -> None:
        response = http.post("/v1/completions", json={"model": "echo", "prompt": prompt, "max_tokens": 1})
        assert response.status_code == 200, response.text

    holders = {}
    for name, prefix in (("first", "the quick brown fox jumps over "), ("second", "0123456789 abcdefghij ")):
        prefix *= 3
        holders[name] = served_by(llm_replicas, lambda: complete(prefix))
        hashes = block_hash_chain(tokenizer.token_ids({"prompt": prefix}), BLOCK_SIZE)
        wait_until(lambda: set(hashes) <= stats.get(f"d-echo-r{holders[name]}", frozenset()),
                   f"the {name} prefix never showed up in its replica's report")
        holders[name] = (holders[name], prefix)
    for name, (holder, prefix) in holders.items():
        for turn in range(3):
            # Idle replicas tie on load; without the reports the choice would rotate between them.
            assert served_by(llm_replicas, lambda: complete(prefix + f" and then {turn}")) == holder, (name, turn)
    http.close()
