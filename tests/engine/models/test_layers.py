"""RMSNorm and RoPE against Hugging Face's implementations."""

from __future__ import annotations

import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from slipway.engine.models.layers import RMSNorm, RotaryEmbedding, inverse_frequencies


def test_rmsnorm_matches_hf():
    ours, theirs = RMSNorm(32, 1e-5), LlamaRMSNorm(32, eps=1e-5)
    with torch.no_grad():
        ours.weight.normal_()
        theirs.weight.copy_(ours.weight)
    x = torch.randn(5, 32)
    torch.testing.assert_close(ours(x), theirs(x))


def test_llama3_and_linear_frequencies_match_hf():
    params = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    config = LlamaConfig(hidden_size=2048, num_attention_heads=16, rope_parameters=params)
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    torch.testing.assert_close(inverse_frequencies(128, 500000.0, params), expected)
    linear = {"rope_type": "linear", "factor": 2.0}
    torch.testing.assert_close(inverse_frequencies(64, 10000.0, linear), inverse_frequencies(64, 10000.0, None) / 2)


def test_rotation_is_relative():
    rope = RotaryEmbedding(16, 64, 10000.0)
    q, k = torch.randn(1, 1, 16), torch.randn(1, 1, 16)
    # The score between positions depends only on their distance.
    def score(pq: int, pk: int) -> float:
        rq, _ = rope(torch.tensor([pq]), q, k)
        _, rk = rope(torch.tensor([pk]), q, k)
        return float((rq * rk).sum())
    assert abs(score(10, 7) - score(40, 37)) < 1e-4
