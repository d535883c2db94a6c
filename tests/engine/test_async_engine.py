"""AsyncLLMEngine: streaming from the engine thread, concurrency, abort on disconnect, failure."""

from __future__ import annotations

import asyncio
import time

import pytest

from slipway.engine.async_engine import AsyncLLMEngine
from slipway.engine.config import EngineConfig
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
