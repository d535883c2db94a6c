"""The built-in LLM engine: continuous batching over a paged, prefix-cached KV cache.

    config.py           EngineConfig, SpeculativeConfig
    sampling_params.py  SamplingParams: how one request samples and stops
    outputs.py          RequestOutput, CompletionOutput, TokenLogprob (per-step deltas)
    sequence.py         Sequence: one choice of a request and its progress
    kv/                 block pool, prefix cache, block tables (contract in kv/base.py)
    scheduler.py        which sequences run each step, chunked prefill, preemption
    models/             the Llama family over the paged cache
    runner.py           ModelRunner: flat batch -> logits; owns the KV tensors
    sampler.py          logits -> tokens
    detokenizer.py      incremental text, stop strings
    speculative.py      prompt-lookup drafts and their verification
    lora/               many LoRA adapters in one batch: adapter table, batched products, merging
    build.py            config + model folder -> device, dtype, sizes, weights, tokenizer
    engine.py           LLMEngine: the synchronous step loop
    async_engine.py     AsyncLLMEngine: the engine in its own thread, streamed to asyncio
    errors.py           the engine's errors in slipway's hierarchy
"""

from slipway.engine.async_engine import AsyncLLMEngine
from slipway.engine.config import EngineConfig, SpeculativeConfig
from slipway.engine.engine import LLMEngine
from slipway.engine.lora import LoraAdapterError, merge_lora
from slipway.engine.errors import (
    EngineDeadError, EngineError, EngineOverloadedError, EngineRequestError, PromptTooLongError,
    UnsupportedModelError,
)
from slipway.engine.outputs import CompletionOutput, RequestOutput, TokenLogprob, accumulate
from slipway.engine.sampling_params import SamplingParams

__all__ = [
    "AsyncLLMEngine", "CompletionOutput", "EngineConfig", "EngineDeadError", "EngineError",
    "EngineOverloadedError", "EngineRequestError", "LLMEngine", "LoraAdapterError", "PromptTooLongError",
    "RequestOutput", "SamplingParams", "SpeculativeConfig", "TokenLogprob", "UnsupportedModelError", "accumulate",
    "merge_lora",
]
