"""EngineConfig validation and the settings the engine resolves from it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from slipway.engine.config import EngineConfig, SpeculativeConfig
from slipway.engine.engine import LLMEngine
from slipway.engine.errors import UnsupportedModelError
from slipway.spec.package import RuntimeSettings


def test_memory_strings_and_bounds():
    assert EngineConfig(kv_cache_memory="64Mi").kv_cache_memory == 64 * 2**20
    with pytest.raises(ValidationError):
        EngineConfig(max_num_seqs=0)
    with pytest.raises(ValidationError, match="extra"):
        EngineConfig(max_num_sequences=4)


def test_chunking_off_needs_a_budget_for_whole_prompts():
    with pytest.raises(ValidationError, match="raise it or enable_chunked_prefill"):
        EngineConfig(enable_chunked_prefill=False, max_model_len=1024, max_num_batched_tokens=512)


def test_short_prompts_first_needs_chunked_prefill():
    with pytest.raises(ValidationError, match="short_prefill_tokens .*needs chunked prefill"):
        EngineConfig(enable_chunked_prefill=False, max_num_batched_tokens=4096, short_prefill_tokens=128)
    assert EngineConfig(short_prefill_tokens=128).short_prefill_tokens == 128


def test_speculative_bounds():
    with pytest.raises(ValidationError, match="prompt_lookup_min"):
        SpeculativeConfig(prompt_lookup_min=4, prompt_lookup_max=2)


def test_from_runtime_settings():
    config = EngineConfig.from_runtime_settings(RuntimeSettings(max_model_len=512, block_size=32), num_kv_blocks=100)
    assert (config.max_model_len, config.block_size, config.num_kv_blocks) == (512, 32, 100)


def test_engine_resolves_and_checks_sizes(llama_checkpoint):
    folder, _ = llama_checkpoint
    engine = LLMEngine(folder, EngineConfig(dtype="float32", kv_cache_memory="1Mi", device="cpu"))
    assert engine.max_model_len == 512, "the model's own limit when below the default"
    # 2 layers x 2 (k, v) x 16 tokens x 2 heads x 16 dims x 4 bytes = 8 KiB per block
    assert engine.kv.num_blocks == 128
    with pytest.raises(UnsupportedModelError, match="raise kv_cache_memory to at least 262144 bytes"):
        LLMEngine(folder, EngineConfig(dtype="float32", kv_cache_memory="64Ki", device="cpu"))
    with pytest.raises(UnsupportedModelError, match="exceeds the model's max_position_embeddings"):
        LLMEngine(folder, EngineConfig(max_model_len=1024))
