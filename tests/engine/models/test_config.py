"""Reading config.json: both rope spellings, biases per architecture, refusals with reasons."""

from __future__ import annotations

import json

import pytest

from slipway.engine.errors import UnsupportedModelError
from slipway.engine.models.config import ModelConfig

BASE = {"architectures": ["LlamaForCausalLM"], "vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2}


def test_defaults_and_derived_fields():
    config = ModelConfig.from_dict(BASE)
    assert (config.head_dim, config.num_queries_per_kv, config.rope_theta) == (8, 4, 10000.0)
    assert not config.qkv_bias and config.rope_scaling is None


def test_both_rope_spellings():
    legacy = ModelConfig.from_dict({**BASE, "rope_theta": 500000.0,
                                    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})
    modern = ModelConfig.from_dict({**BASE, "rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3",
                                                                "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                                "original_max_position_embeddings": 8192}})
    assert legacy.rope_theta == modern.rope_theta == 500000.0
    assert legacy.rope_scaling == modern.rope_scaling
    assert modern.rope_scaling["rope_type"] == "llama3"


def test_qwen2_has_qkv_bias_and_llama_may_have_all_biases():
    qwen = ModelConfig.from_dict({**BASE, "architectures": ["Qwen2ForCausalLM"]})
    assert qwen.qkv_bias and not qwen.o_bias
    llama = ModelConfig.from_dict({**BASE, "attention_bias": True})
    assert llama.qkv_bias and llama.o_bias


def test_refusals_name_the_problem():
    with pytest.raises(UnsupportedModelError, match="GPT2LMHeadModel.*not supported"):
        ModelConfig.from_dict({**BASE, "architectures": ["GPT2LMHeadModel"]})
    with pytest.raises(UnsupportedModelError, match="rope type 'yarn'"):
        ModelConfig.from_dict({**BASE, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    with pytest.raises(UnsupportedModelError, match="not a multiple"):
        ModelConfig.from_dict({**BASE, "num_key_value_heads": 3})


def test_folder_reads_generation_eos(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**BASE, "eos_token_id": 2}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    assert ModelConfig.from_folder(tmp_path).eos_token_ids == (2, 7)
    with pytest.raises(UnsupportedModelError, match="no config.json"):
        ModelConfig.from_folder(tmp_path / "missing")


def test_mistral_sliding_window_is_recorded():
    config = ModelConfig.from_dict({**BASE, "architectures": ["MistralForCausalLM"], "sliding_window": 4096})
    assert config.sliding_window == 4096
