"""AsyncLLMEngine: streaming from the engine thread, concurrency, abort on disconnect, failure."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from slipway.engine import async_engine
from slipway.engine.async_engine import AsyncLLMEngine
from slipway.engine.config import EngineConfig
from slipway.engine.engine import LLMEngine
from slipway.engine.errors import EngineDeadError, PromptTooLongError
from slipway.engine.sampling_params import SamplingParams

from .conftest import hf_greedy, random_prompt


@pytest.fixture
async def engine(llama_checkpoint):
    folder, _ = llama_checkpoint
    config = EngineConfig(dtype="float32", device="cpu", block_size=4, num_kv_blocks=128, max_model_len=256)
    engine = await asyncio.to_thread(AsyncLLMEngine.from_pretrained, folder, config)
    yield engine
    await engine.shutdown()


async def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def collect(engine: AsyncLLMEngine, prompt, params) -> tuple[list[int], str, int]:
    tokens, text, chunks = [], "", 0
    async for output in engine.generate(prompt, params):
        for choice in output.outputs:
            tokens += choice.token_ids
            text += choice.text
        chunks += 1
    return tokens, text, chunks


async def test_concurrent_streams_match_hf(engine, llama_checkpoint):
    _, model = llama_checkpoint
    params = SamplingParams(temperature=0.0, max_tokens=12)
    prompts = [random_prompt(n, seed=n) for n in (4, 9, 17)]
    results = await asyncio.gather(*(collect(engine, p, params) for p in prompts))
    for prompt, (tokens, text, chunks) in zip(prompts, results):
        assert tokens == hf_greedy(model, prompt, 12)
        assert chunks == len(tokens), "tokens stream step by step"
        assert text == engine.tokenizer.decode(tokens, skip_special_tokens=True)
    stats = engine.stats()
    assert stats["requests"] == 0 and stats["kv_blocks_used"] == 0


async def test_leaving_the_stream_aborts_and_frees(engine):
    stream = engine.generate(random_prompt(30, seed=4), SamplingParams(max_tokens=200, ignore_eos=True))
    await anext(stream)
    await anext(stream)
    assert engine.engine.kv.num_used_blocks > 0
    await stream.aclose()
    await wait_until(lambda: engine.stats()["requests"] == 0 and engine.stats()["kv_blocks_used"] == 0)


async def test_cancelled_consumer_aborts(engine):
    started = asyncio.Event()

    async def consume():
        async for _ in engine.generate(random_prompt(8, seed=5), SamplingParams(max_tokens=200, ignore_eos=True)):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: engine.stats()["requests"] == 0 and engine.stats()["kv_blocks_used"] == 0)


async def test_explicit_abort_ends_the_stream(engine):
    reasons = []

    async def consume():
        async for output in engine.generate(random_prompt(8, seed=6), SamplingParams(max_tokens=200, ignore_eos=True),
                                            request_id="victim"):
            reasons.extend(c.finish_reason for c in output.outputs if c.finish_reason)

    task = asyncio.create_task(consume())
    await wait_until(lambda: engine.stats()["generated_tokens"] > 0)
    await engine.abort("victim")
    await asyncio.wait_for(task, 5)
    assert reasons == ["abort"]


async def test_bad_request_raises_before_streaming(engine):
    with pytest.raises(PromptTooLongError):
        async for _ in engine.generate(list(range(3, 300)), SamplingParams()):
            pass


async def test_a_failing_step_fails_every_stream(engine):
    def broken_step():
        raise RuntimeError("device lost")

    engine.engine.step = broken_step
    with pytest.raises(EngineDeadError, match="device lost"):
        await collect(engine, random_prompt(5, seed=7), SamplingParams(max_tokens=4))
    with pytest.raises(EngineDeadError):
        await collect(engine, random_prompt(5, seed=8), SamplingParams(max_tokens=4))


async def test_no_requests_after_shutdown(engine):
    await engine.shutdown()
    with pytest.raises(EngineDeadError, match="shut down"):
        await collect(engine, random_prompt(5, seed=9), SamplingParams(max_tokens=2))


# -- latencies ---------------------------------------------------------------------------------


class TickClock:
    """A fake clock: every reading is one second after the one before."""

    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            self.now += 1.0
            return self.now


async def timed_engine(folder, **config) -> AsyncLLMEngine:
    config = EngineConfig(dtype="float32", device="cpu", block_size=4, num_kv_blocks=128, max_model_len=256, **config)
    return await asyncio.to_thread(AsyncLLMEngine.from_pretrained, folder, config, clock=TickClock())


async def test_latencies_are_timed_where_outputs_leave_the_engine(llama_checkpoint):
    engine = await timed_engine(llama_checkpoint[0])
    try:
        # Readings: arrival 1, then one per output: tokens at 2, 3, 4, 5, 6.
        params = SamplingParams(max_tokens=5, ignore_eos=True)
        tokens, _, chunks = await collect(engine, random_prompt(6, seed=10), params)
        assert len(tokens) == chunks == 5
        latencies = engine.latency_histograms()
        ttft, itl, e2e = (latencies[name] for name in ("time_to_first_token_seconds", "inter_token_latency_seconds",
                                                        "e2e_request_latency_seconds"))
        assert (ttft.count, ttft.sum) == (1, 1.0)
        assert (itl.count, itl.sum) == (4, 4.0)
        assert (e2e.count, e2e.sum) == (1, 5.0)
        # 1.0 is a bucket bound: le="1.0" holds the observation, the buckets below do not.
        assert ttft.counts[ttft.bounds.index(1.0)] == 1 and sum(ttft.counts) == 1
        assert e2e.counts[e2e.bounds.index(5.0)] == 1
        assert engine.latency_quantiles()["e2e_request_latency_seconds"] == {"p50": 5.0, "p90": 5.0, "p99": 5.0}
    finally:
        await engine.shutdown()


async def test_several_tokens_in_one_output_share_its_interval(llama_checkpoint):
    engine = await timed_engine(llama_checkpoint[0], speculative={"num_speculative_tokens": 4})
    try:
        # A looping prompt makes n-gram drafts that this model (greedy) accepts: some outputs carry several tokens.
        prompt = [5, 6, 7, 8] * 6
        params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
        tokens, _, chunks = await collect(engine, prompt, params)
        assert engine.stats()["spec_accepted_tokens"] > 0 and chunks < len(tokens)
        itl = engine.latency_histograms()["inter_token_latency_seconds"]
        # Every token after the first is observed once; their sum is the time between first and last output.
        assert itl.count == len(tokens) - 1
        assert itl.sum == pytest.approx(chunks - 1)
    finally:
        await engine.shutdown()


async def test_an_aborted_request_has_a_first_token_but_no_end_to_end_latency(engine):
    stream = engine.generate(random_prompt(8, seed=11), SamplingParams(max_tokens=200, ignore_eos=True))
    await anext(stream)
    await stream.aclose()
    await wait_until(lambda: engine.stats()["requests"] == 0)
    latencies = engine.latency_histograms()
    assert latencies["time_to_first_token_seconds"].count == 1
    assert latencies["e2e_request_latency_seconds"].count == 0
    assert engine.latency_quantiles()["e2e_request_latency_seconds"] == {"p50": None, "p90": None, "p99": None}


async def test_cached_block_hashes_name_the_prompts_blocks(engine):
    from slipway.routing import block_hash_chain

    prompt = random_prompt(13, seed=12)
    await collect(engine, prompt, SamplingParams(max_tokens=1))
    assert engine.cached_block_hashes(3) == list(block_hash_chain(prompt, 4))
    assert engine.cached_block_hashes(0) == []


# -- the engine thread -------------------------------------------------------------------------


async def test_the_thread_that_loads_the_model_is_the_one_that_steps_it(llama_checkpoint, monkeypatch):
    threads: dict[str, threading.Thread] = {}

    class Recording(LLMEngine):
        def __init__(self, *args, **kwargs) -> None:
            threads["load"] = threading.current_thread()
            super().__init__(*args, **kwargs)

        def step(self):
            threads["step"] = threading.current_thread()
            return super().step()

    monkeypatch.setattr(async_engine, "LLMEngine", Recording)
    folder, _ = llama_checkpoint
    config = EngineConfig(dtype="float32", device="cpu", block_size=4, num_kv_blocks=64, max_model_len=128)
    engine = await asyncio.to_thread(AsyncLLMEngine.from_pretrained, folder, config)
    try:
        assert engine.is_running, "the thread stays after loading, waiting for requests"
        tokens, _, _ = await collect(engine, random_prompt(5, seed=3), SamplingParams(max_tokens=3))
        assert len(tokens) == 3
        assert threads["step"] is threads["load"], "one thread, so one OpenMP pool, does all the tensor work"
        assert threads["load"].name == "slipway-engine"
    finally:
        await engine.shutdown()
    assert not threads["load"].is_alive()


async def test_a_model_that_fails_to_load_raises_in_the_caller(tmp_path):
    with pytest.raises(Exception, match="config.json"):
        await asyncio.to_thread(AsyncLLMEngine.from_pretrained, tmp_path, EngineConfig(device="cpu"))
