"""The gateway's prompt tokenizers: the replica's token ids from the replica's files, fetched without ever
making a request wait, bounded, retried after a failure."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import orjson
import pytest
from transformers import AutoTokenizer

from slipway.gateway import GatewayConfig
from slipway.gateway.table import RouteTable
from slipway.gateway.tokenizer_cache import PromptTokenizer, TokenizerCache, build_prompt_tokenizer
from slipway.gateway.upstream import UpstreamPool
from slipway.routing import block_hash_chain
from slipway.runtimes.openai_text import (
    chat_prompt_ids, completion_prompt_ids, parse_chat_request, parse_completion_request,
)
from slipway.server.app import _tokenizer_body
from slipway.spec.snapshot import DeploymentEntry, ReplicaEntry, RoutingSnapshot
from tests.engine.conftest import VOCAB_SIZE, _save_tokenizer
from tests.gateway.conftest import INVOKE_A, ServerThread, deployment, world

CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")
BODIES = [
    {"messages": [{"role": "user", "content": "hello world"}]},
    {"messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "the end"},
                  {"role": "assistant", "content": None}, {"role": "user", "content": [
                      {"type": "text", "text": "two"}, {"type": "text", "text": "parts"}]}]},
    {"prompt": "hello world, the end!"},
    {"prompt": [5, 6, 7, 8, 9]},
    {"prompt": ["first of a batch", "second"]},
    {"prompt": [[3, 4, 5], [6, 7]]},
]


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-tokenizer")
    _save_tokenizer(folder)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return folder


def tokenizer_answer(folder: Path, block_size: int = 4) -> dict:
    """What a replica serving `folder` answers to GET /tokenizer."""
    return orjson.loads(_tokenizer_body(folder, "tiny", block_size))


def replica_token_ids(tokenizer, body: dict) -> list[int]:
    """What the replica's runtime feeds its engine for `body` (the first prompt of a batch)."""
    if "messages" in body:
        return chat_prompt_ids(tokenizer, parse_chat_request(body))
    return completion_prompt_ids(tokenizer, parse_completion_request(body), VOCAB_SIZE)[0]


def smollm2_folder() -> Path | None:
    """The SmolLM2 folder examples/smollm2 converts on first use, if this machine has one."""
    home = Path(os.environ.get("SLIPWAY_HOME", "~/.slipway")).expanduser()
    for template in sorted(home.glob("models/*/hf-*/chat_template.jinja")):
        if "SmolLM" in template.read_text() and (template.parent / "tokenizer.json").is_file():
            return template.parent
    return None


# -- token ids --------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", BODIES)
def test_token_ids_are_the_replicas_own(tiny_tokenizer, body):
    gateway_side = build_prompt_tokenizer(tokenizer_answer(tiny_tokenizer))
    replica_side = AutoTokenizer.from_pretrained(tiny_tokenizer, local_files_only=True)
    expected = replica_token_ids(replica_side, body)
    assert gateway_side.token_ids(body) == expected
    assert gateway_side.block_hashes(body) == block_hash_chain(expected, 4)
    assert gateway_side.block_hashes(body, max_blocks=1) == block_hash_chain(expected, 4)[:1]


@pytest.mark.skipif(smollm2_folder() is None, reason="SmolLM2 is not converted on this machine; serve "
                                                     "examples/smollm2 once to enable this test")
@pytest.mark.parametrize("body", BODIES[:3] + [{"prompt": "The quick brown fox " * 200}])
def test_token_ids_are_the_replicas_own_with_smollm2(body):
    folder = smollm2_folder()
    gateway_side = build_prompt_tokenizer(orjson.loads(_tokenizer_body(folder, "smollm2", 16)))
    replica_side = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if "messages" in body:
        expected = chat_prompt_ids(replica_side, parse_chat_request(body))
    else:
        expected = completion_prompt_ids(replica_side, parse_completion_request(body), 49152)[0]
    assert gateway_side.token_ids(body) == expected and len(expected) > 3


@pytest.mark.parametrize("body", [
    {"messages": []}, {"messages": [{"role": "wizard", "content": "x"}]}, {"messages": "hello"},
    {"prompt": []}, {"prompt": {"text": "x"}}, {"input": "an embeddings body"}, {},
])
def test_a_body_the_replica_would_refuse_has_no_token_ids(tiny_tokenizer, body):
    gateway_side = build_prompt_tokenizer(tokenizer_answer(tiny_tokenizer))
    assert gateway_side.token_ids(body) is None and gateway_side.block_hashes(body) == ()


def test_a_model_without_a_chat_template_gives_chats_no_token_ids(tmp_path):
    _save_tokenizer(tmp_path)
    gateway_side = build_prompt_tokenizer(tokenizer_answer(tmp_path))
    assert gateway_side.token_ids(BODIES[0]) is None
    assert gateway_side.token_ids({"prompt": "abc"}) is not None


@pytest.mark.parametrize(("change", "message"), [
    (lambda a: a["files"].update({"../escape.json": "{}"}), "not a plain file name"),
    (lambda a: a.update(kv_block_size=0), "not a positive integer"),
    (lambda a: a.pop("files"), "no 'files' object"),
])
def test_a_bad_tokenizer_answer_is_refused_with_the_reason(tiny_tokenizer, change, message):
    answer = tokenizer_answer(tiny_tokenizer)
    change(answer)
    with pytest.raises(ValueError, match=message):
        build_prompt_tokenizer(answer)


# -- fetching -------------------------------------------------------------------------------------------


class TokenizerServer:
    """Answers GET /tokenizer like a replica serving `folder`; `fail` makes it answer 503; counts reads."""

    def __init__(self, folder: Path) -> None:
        self.body = _tokenizer_body(folder, "tiny", 4)
        self.fail = False
        self.reads = 0
        self.lock = threading.Lock()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        with self.lock:
            self.reads += 1
        status, body = (503, b'{"error": {"message": "loading"}}') if self.fail else (200, self.body)
        if scope["path"] != "/tokenizer":
            status, body = 404, b"{}"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def tokenizer_server(tiny_tokenizer):
    app = TokenizerServer(tiny_tokenizer)
    server = ServerThread(app).start()
    app.url = server.url
    yield app
    server.stop()


def routes(url: str, *deployment_ids: str):
    return RouteTable.build(RoutingSnapshot(version=1, deployments=[
        DeploymentEntry(deployment_id=d, model_name=d, number=1, kind="llm", status="active", routing="kv_aware",
                        replicas=[ReplicaEntry(replica_id=f"{d}-r0", url=url)]) for d in deployment_ids])).deployments


async def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_requests_never_wait_for_the_tokenizer_and_get_hashes_once_it_is_built(tokenizer_server):
    route = routes(tokenizer_server.url, "d")["d"]
    cache = TokenizerCache(UpstreamPool(), GatewayConfig())
    body = orjson.dumps({"prompt": [1, 2, 3, 4, 5, 6, 7, 8, 9]})
    assert await cache.block_hashes(route, body, None) == (), "not fetched yet: no hashes, and no waiting"
    assert cache.state("d") == "fetching"
    await wait_until(lambda: cache.get("d") is not None)
    assert cache.state("d") == "ready"
    assert await cache.block_hashes(route, body, None) == block_hash_chain(list(range(1, 10)), 4)
    assert await cache.block_hashes(route, body, 1) == block_hash_chain(list(range(1, 10)), 4)[:1]
    assert await cache.block_hashes(route, b"not json", None) == ()
    assert tokenizer_server.reads == 1, "fetched once per deployment"
    cache.close()
    cache.pool.close()


async def test_a_failed_fetch_is_retried_after_the_retry_interval(tokenizer_server):
    route = routes(tokenizer_server.url, "d")["d"]
    cache = TokenizerCache(UpstreamPool(), GatewayConfig(tokenizer_retry_interval=0.3))
    tokenizer_server.fail = True
    cache.prefetch(route, time.monotonic())
    await wait_until(lambda: cache.state("d") == "failed")
    tokenizer_server.fail = False
    cache.prefetch(route, time.monotonic())
    assert cache.state("d") == "failed" and tokenizer_server.reads == 1, "no retry before the interval"
    await asyncio.sleep(0.3)
    cache.prefetch(route, time.monotonic())
    await wait_until(lambda: cache.state("d") == "ready")
    assert tokenizer_server.reads == 2
    cache.close()
    cache.pool.close()


async def test_at_most_max_tokenizers_are_kept_and_a_dropped_one_comes_back_on_demand(tokenizer_server):
    table = routes(tokenizer_server.url, "d-1", "d-2")
    cache = TokenizerCache(UpstreamPool(), GatewayConfig(max_tokenizers=1))
    cache.prefetch(table["d-1"], time.monotonic())
    await wait_until(lambda: cache.state("d-1") == "ready")
    cache.prefetch(table["d-2"], time.monotonic())
    await wait_until(lambda: cache.state("d-2") == "ready")
    assert cache.state("d-1") == "evicted"
    cache.prefetch(table["d-1"], time.monotonic())  # the poller's prefetch does not bring it back ...
    assert cache.state("d-1") == "evicted"
    await cache.block_hashes(table["d-1"], b'{"prompt": "abc"}', None)  # ... a request does
    await wait_until(lambda: cache.state("d-1") == "ready")
    assert cache.state("d-2") == "evicted" and tokenizer_server.reads == 3
    cache.retain({"d-2"})
    assert cache.state("d-1") == "absent"
    cache.close()
    cache.pool.close()


def test_a_kv_aware_deployment_whose_replicas_serve_no_tokenizer_is_routed_by_load(gateway, replicas):
    fakes = replicas(2)  # they answer GET /tokenizer and GET /stats with 404
    gw = gateway(world(deployment("d-echo", "echo", [f.url for f in fakes], routing="kv_aware")),
                 replica_stats_interval=0.05, tokenizer_retry_interval=60)
    with gw.client(INVOKE_A) as http:
        served = {http.post("/models/echo/predict", json={"prompt": "hello"}).json()["replica"] for _ in range(4)}
    assert served == {"fake-0", "fake-1"}, "no hashes: least load, ties in turn"
    deadline = time.monotonic() + 10
    while gw.app.tokenizers.state("d-echo") != "failed":
        assert time.monotonic() < deadline, gw.app.tokenizers.state("d-echo")
        time.sleep(0.02)
