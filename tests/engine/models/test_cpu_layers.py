"""The fused bfloat16 layer ops (cpu_layers.c) against the PyTorch operators they replace, and the
model and engine running through them."""

from __future__ import annotations

import shutil

import pytest
import torch

from slipway.engine.config import EngineConfig
from slipway.engine.engine import LLMEngine
from slipway.engine.models import load_model
from slipway.engine.models.cpu_attention import PagedAttentionKernel, load_kernel
from slipway.engine.models.cpu_layers import FusedLayerOps
from slipway.engine.models.layers import RMSNorm, RotaryEmbedding, apply_rotary_one
from slipway.engine.runner import ForwardInput, ModelRunner
from slipway.engine.sampling_params import SamplingParams

from ..conftest import random_prompt

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None,
                                reason="no C compiler on this machine to build the kernels")

BF16 = torch.bfloat16


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> PagedAttentionKernel:
    built = load_kernel(tmp_path_factory.mktemp("kernels"))
    assert built is not None, "the kernels should build where a C compiler exists"
    return built


@pytest.fixture(scope="module")
def ops(kernel: PagedAttentionKernel) -> FusedLayerOps:
    return FusedLayerOps(kernel.library)


def bf16_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to a bfloat16 rounding or two: the ops round once where eager rounds per operator."""
    torch.testing.assert_close(actual.float(), expected.float(), atol=2e-2, rtol=2 ** -7)


def norm_of(size: int, seed: int) -> RMSNorm:
    norm = RMSNorm(size, 1e-5).to(BF16)
    norm.weight.data = torch.randn(size, generator=torch.Generator().manual_seed(seed)).to(BF16)
    return norm


# Sizes with and without a multiple of 16 (the vector loop and the scalar tail), rows from one
# (serial) to a prompt chunk (split across threads).
@pytest.mark.parametrize("rows", [1, 16, 300])
@pytest.mark.parametrize("hidden", [576, 40])
def test_norms_match_pytorch(ops: FusedLayerOps, rows: int, hidden: int) -> None:
    torch.manual_seed(rows + hidden)
    x, residual, norm = torch.randn(rows, hidden).to(BF16), torch.randn(rows, hidden).to(BF16), norm_of(hidden, 1)
    bf16_close(ops.rms_norm(x, norm), norm(x))
    updated = residual.clone()
    normed = ops.add_rms_norm(x, updated, norm)
    assert torch.equal(updated, residual + x), "the residual add rounds exactly as the eager add"
    bf16_close(normed, norm(residual + x))


@pytest.mark.parametrize("rows", [1, 16, 300])
@pytest.mark.parametrize("inter", [1536, 24])
def test_silu_and_mul_matches_pytorch(ops: FusedLayerOps, rows: int, inter: int) -> None:
    torch.manual_seed(rows + inter)
    gate_up = (torch.randn(rows, 2 * inter) * 4).to(BF16)  # large enough to reach both tails of the sigmoid
    gate, up = gate_up.split(inter, dim=-1)
    bf16_close(ops.silu_and_mul(gate_up), torch.nn.functional.silu(gate) * up)


@pytest.mark.parametrize("rows", [1, 16, 300])
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(9, 3, 64), (4, 2, 16), (2, 2, 128)])
def test_rope_and_cache_rotates_in_place_and_writes_the_slots(ops: FusedLayerOps, rows: int, heads: int,
                                                             kv_heads: int, head_dim: int) -> None:
    generator = torch.Generator().manual_seed(rows + heads)
    rotary = RotaryEmbedding(head_dim, 2048, 10000.0).to(BF16)
    rotary.build_table()
    num_blocks, block_size = 40, 16
    qkv = torch.randn(rows, (heads + 2 * kv_heads) * head_dim, generator=generator).to(BF16)
    positions = torch.randint(0, 2048, (rows,), generator=generator)
    slots = torch.randperm(num_blocks * block_size, generator=generator)[:rows]
    k_cache = torch.zeros(kv_heads, num_blocks, block_size, head_dim, dtype=BF16)
    v_cache = torch.zeros_like(k_cache)

    rotated = qkv.clone()
    ops.rope_and_cache(rotated, positions, rotary, heads, kv_heads, k_cache, v_cache, slots)

    q_and_k = (heads + kv_heads) * head_dim
    expected = apply_rotary_one(qkv[:, :q_and_k].view(rows, heads + kv_heads, head_dim),
                                *rotary.cos_sin(positions, BF16))
    bf16_close(rotated[:, :q_and_k].view(rows, heads + kv_heads, head_dim), expected)
    assert torch.equal(rotated[:, q_and_k:], qkv[:, q_and_k:]), "values are not rotated"
    cached_keys = k_cache.view(kv_heads, -1, head_dim)[:, slots].transpose(0, 1)
    cached_values = v_cache.view(kv_heads, -1, head_dim)[:, slots].transpose(0, 1)
    assert torch.equal(cached_keys, rotated[:, heads * head_dim:q_and_k].view(rows, kv_heads, head_dim))
    assert torch.equal(cached_values, qkv[:, q_and_k:].view(rows, kv_heads, head_dim))
    untouched = torch.ones(num_blocks * block_size, dtype=torch.bool)
    untouched[slots] = False
    assert not k_cache.view(kv_heads, -1, head_dim)[:, untouched].any(), "no other slot is written"


def test_the_model_runs_through_the_ops_only_for_bfloat16(llama_checkpoint, kernel: PagedAttentionKernel) -> None:
    folder, _ = llama_checkpoint
    runners = {}
    for dtype in (torch.float32, BF16):
        model = load_model(folder, dtype=dtype, device="cpu", max_positions=64)
        runners[dtype] = ModelRunner(model, num_blocks=16, block_size=4, kv_dtype=dtype, compute_dtype=dtype,
                                     attention_kernel=kernel)
    assert runners[torch.float32].model.fused_ops is None, "float32 keeps PyTorch's operators: exact to HF"
    assert runners[BF16].model.fused_ops is not None


def test_fused_and_eager_bfloat16_give_the_same_logits(llama_checkpoint, kernel: PagedAttentionKernel) -> None:
    folder, _ = llama_checkpoint
    runners = []
    for fused in (False, True):
        model = load_model(folder, dtype=BF16, device="cpu", max_positions=64)
        runner = ModelRunner(model, num_blocks=16, block_size=4, kv_dtype=BF16, compute_dtype=BF16,
                             attention_kernel=kernel)
        if not fused:
            runner.model.fused_ops = None
        runners.append(runner)
    prompt = random_prompt(11, seed=5)
    steps = [
        [ForwardInput(prompt[:8], 0, [2, 5], 0)],  # a chunk mid-prompt
        [ForwardInput(prompt[8:], 8, [2, 5, 7], 1), ForwardInput(prompt[:3], 0, [9], 1)],  # a chunk and a prompt
        [ForwardInput(prompt[10:11], 10, [2, 5, 7], 1)],  # a decode over the cached past
    ]
    eager, fused = runners
    for inputs in steps:
        torch.testing.assert_close(fused.execute(inputs), eager.execute(inputs), atol=5e-2, rtol=5e-2)
    torch.testing.assert_close(fused.kv_cache.float(), eager.kv_cache.float(), atol=5e-2, rtol=5e-2)


def test_a_bfloat16_engine_generates_through_the_ops(llama_checkpoint) -> None:
    folder, _ = llama_checkpoint
    settings = dict(device="cpu", block_size=4, num_kv_blocks=64, max_model_len=128, dtype="bfloat16")
    engine = LLMEngine(folder, EngineConfig(**settings))
    assert engine.runner.model.fused_ops is not None
    assert LLMEngine(folder, EngineConfig(**settings, cpu_attention_kernel=False)).runner.model.fused_ops is None
    prompts = [random_prompt(n, seed=n) for n in (3, 17, 40)]
    outputs = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True))
    assert [len(o.outputs[0].token_ids) for o in outputs] == [12, 12, 12]
    assert engine.kv.num_used_blocks == 0
