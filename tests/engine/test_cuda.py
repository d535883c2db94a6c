"""The engine on a CUDA device against Hugging Face's greedy decoding on the same device.

The rest of the engine's tests run on CPU; these run where a GPU is (skipped elsewhere, CI
included), so that "device-agnostic" is checked rather than assumed: float32 output must be
token-identical to `generate`, with chunked prefill and speculative decoding too, and bfloat16
must run.
"""

from __future__ import annotations

import pytest
import torch

from slipway.engine.config import EngineConfig, SpeculativeConfig
from slipway.engine.engine import LLMEngine
from slipway.engine.sampling_params import SamplingParams

from .conftest import random_prompt

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def cuda_greedy(model: torch.nn.Module, prompt: list[int], max_new_tokens: int) -> list[int]:
    ids = torch.tensor([prompt], device="cuda")
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("settings", [
    {},
    {"max_num_batched_tokens": 16},  # prompts in chunks beside decodes
    {"speculative": SpeculativeConfig(num_speculative_tokens=3)},
], ids=["plain", "chunked", "speculative"])
def test_float32_on_cuda_matches_hf_generate(checkpoint, settings):
    folder, cpu_model = checkpoint
    model = type(cpu_model).from_pretrained(folder).to("cuda").eval()
    engine = LLMEngine(folder, EngineConfig(dtype="float32", device="cuda", block_size=4, num_kv_blocks=256,
                                            max_model_len=256, **settings))
    assert engine.runner.kv_cache.device.type == "cuda"
    assert engine.runner.attention_kernel is None, "the C kernels are for CPU caches only"
    prompts = [random_prompt(n, seed=300 + n) for n in (3, 17, 40, 90)]
    outputs = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=24))
    assert [o.outputs[0].token_ids for o in outputs] == [cuda_greedy(model, p, 24) for p in prompts]
    assert engine.kv.num_used_blocks == 0


def test_bfloat16_on_cuda_generates_seeded_text(llama_checkpoint):
    folder, _ = llama_checkpoint
    engine = LLMEngine(folder, EngineConfig(dtype="bfloat16", device="cuda", max_model_len=256))
    prompts = [random_prompt(n, seed=400 + n) for n in (5, 60)]
    params = SamplingParams(temperature=0.8, seed=3, max_tokens=32, ignore_eos=True)
    first = [o.outputs[0].token_ids for o in engine.generate(prompts, params)]
    assert [len(t) for t in first] == [32, 32]
    assert first == [o.outputs[0].token_ids for o in engine.generate(prompts, params)]
