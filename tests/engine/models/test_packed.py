"""Packed (oneDNN-blocked) linear layers: the same products as nn.Linear, swapped in for eager
bfloat16 runs on CPU only."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slipway.engine.config import EngineConfig
from slipway.engine.engine import LLMEngine
from slipway.engine.models import load_model
from slipway.engine.models.packed import PackedLinear, can_pack, pack_linear_layers
from slipway.engine.runner import ForwardInput, ModelRunner

from ..conftest import random_prompt

pytestmark = pytest.mark.skipif(not can_pack(torch.device("cpu"), torch.bfloat16),
                                reason="this torch build has no oneDNN bfloat16 linear on this CPU")


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 7, 300])
def test_packed_linear_equals_nn_linear(bias, rows):
    torch.manual_seed(rows)
    linear = nn.Linear(96, 80, bias=bias).to(torch.bfloat16)
    x = torch.randn(rows, 96, dtype=torch.bfloat16)
    torch.testing.assert_close(PackedLinear(linear)(x), linear(x))  # bfloat16 tolerance: a bias may round apart


def test_only_bfloat16_on_cpu_packs():
    assert not can_pack(torch.device("cpu"), torch.float32)
    assert not can_pack(torch.device("meta"), torch.bfloat16)


def test_packed_model_gives_the_same_logits(llama_checkpoint):
    folder, _ = llama_checkpoint
    runners = []
    for pack in (False, True):
        model = load_model(folder, dtype=torch.bfloat16, device="cpu", max_positions=64)
        if pack:
            assert pack_linear_layers(model) == 2 * 4 + 1, "qkv, o, gate_up, down per layer, and the LM head"
        runners.append(ModelRunner(model, num_blocks=16, block_size=4, kv_dtype=torch.bfloat16,
                                   compute_dtype=torch.float32))
    plain, packed = runners
    assert isinstance(packed.model.lm_head, PackedLinear)
    assert isinstance(packed.model.embed_tokens, nn.Embedding), "the tied embedding keeps its plain matrix"
    prompt = random_prompt(9, seed=3)
    for runner in runners:
        runner.execute([ForwardInput(prompt[:8], 0, [2, 5], 0)])
    for inputs in ([ForwardInput(prompt[8:], 8, [2, 5, 7], 1)], [ForwardInput(prompt, 0, [1, 3, 4], 2)]):
        torch.testing.assert_close(packed.execute(inputs), plain.execute(inputs), atol=1e-2, rtol=1e-2)


def test_an_eager_bfloat16_engine_packs_and_a_float32_one_does_not(llama_checkpoint):
    folder, _ = llama_checkpoint
    settings = dict(device="cpu", block_size=4, num_kv_blocks=64, max_model_len=128)
    bf16 = LLMEngine(folder, EngineConfig(dtype="bfloat16", **settings))
    fp32 = LLMEngine(folder, EngineConfig(dtype="float32", **settings))
    assert isinstance(bf16.runner.model.layers[0].mlp.down_proj, PackedLinear)
    assert isinstance(fp32.runner.model.layers[0].mlp.down_proj, nn.Linear)
