"""Our Llama-family forward against Hugging Face's, logits for logits, over the paged cache."""

from __future__ import annotations

import pytest
import torch

from slipway.engine.models import load_model
from slipway.engine.runner import ForwardInput, ModelRunner

from ..conftest import random_prompt


def make_runner(folder, dtype=torch.float32, num_blocks=32, block_size=4, max_query=1) -> ModelRunner:
    model = load_model(folder, dtype=dtype, device="cpu", max_positions=256)
    return ModelRunner(model, num_blocks=num_blocks, block_size=block_size, kv_dtype=dtype,
                       compute_dtype=torch.float32, max_batched_query_len=max_query)


def hf_logits(model, tokens: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0]


def test_prefill_in_chunks_then_decodes(checkpoint):
    folder, model = checkpoint
    runner = make_runner(folder)
    tokens = random_prompt(15, seed=1)
    expected = hf_logits(model, tokens)
    table = [9, 3, 20, 7]  # deliberately scattered blocks
    got = [runner.execute([ForwardInput(tokens[:6], 0, table, 6)]),       # chunk without past
           runner.execute([ForwardInput(tokens[6:11], 6, table, 5)])]      # chunk over cached past
    got += [runner.execute([ForwardInput([tokens[p]], p, table, 1)]) for p in range(11, 15)]
    torch.testing.assert_close(torch.cat(got), expected, atol=1e-5, rtol=1e-5)


def test_mixed_batch_of_prefills_decodes_and_multi_token_queries(checkpoint):
    folder, model = checkpoint
    runner = make_runner(folder, max_query=3)
    a, b, c = random_prompt(10, seed=2), random_prompt(7, seed=3), random_prompt(12, seed=4)
    tables = {"a": [0, 1, 2], "b": [5, 4], "c": [10, 11, 12]}
    # Fill some past for each, then one step mixing: a decode, a 3-token query, a prefill chunk.
    runner.execute([ForwardInput(a[:9], 0, tables["a"], 0), ForwardInput(b[:4], 0, tables["b"], 0),
                    ForwardInput(c[:2], 0, tables["c"], 0)])
    logits = runner.execute([
        ForwardInput(a[9:], 9, tables["a"], 1),
        ForwardInput(b[4:], 4, tables["b"], 3),
        ForwardInput(c[2:], 2, tables["c"], 2),
    ])
    expected = torch.cat([hf_logits(model, a)[9:], hf_logits(model, b)[4:], hf_logits(model, c)[10:]])
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_bfloat16_stays_close_to_float32(llama_checkpoint):
    folder, model = llama_checkpoint
    runner = make_runner(folder, dtype=torch.bfloat16)
    tokens = random_prompt(12, seed=5)
    logits = runner.execute([ForwardInput(tokens, 0, [0, 1, 2], 12)])
    assert runner.model.embed_tokens.weight.dtype == torch.bfloat16
    assert logits.dtype == torch.float32
    expected = hf_logits(model, tokens)
    assert (logits - expected).abs().max() < 0.1 * expected.abs().max()


def test_tied_head_is_the_embedding(llama_checkpoint, qwen2_checkpoint):
    llama = load_model(llama_checkpoint[0], dtype=torch.float32, device="cpu", max_positions=64)
    assert llama.lm_head.weight.data_ptr() == llama.embed_tokens.weight.data_ptr()
    qwen = load_model(qwen2_checkpoint[0], dtype=torch.float32, device="cpu", max_positions=64)
    assert qwen.lm_head.weight.data_ptr() != qwen.embed_tokens.weight.data_ptr()
    assert qwen.layers[0].self_attn.qkv_proj.bias is not None
    assert qwen.layers[0].self_attn.o_proj.bias is None


@pytest.mark.parametrize("max_query", [1, 4])
def test_speculative_query_rows_equal_one_by_one_decoding(llama_checkpoint, max_query):
    folder, model = llama_checkpoint
    runner = make_runner(folder, max_query=max_query)
    tokens = random_prompt(11, seed=6)
    runner.execute([ForwardInput(tokens[:7], 0, [3, 2, 1], 0)])
    logits = runner.execute([ForwardInput(tokens[7:], 7, [3, 2, 1], 4)])
    torch.testing.assert_close(logits, hf_logits(model, tokens)[7:], atol=1e-5, rtol=1e-5)


def _variant(kind: str):
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    common = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=1, max_position_embeddings=512, initializer_range=0.1)
    if kind == "mistral":
        return MistralForCausalLM(MistralConfig(sliding_window=4096, **common))
    rope = {"rope_type": "llama3", "rope_theta": 50000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    model = LlamaForCausalLM(LlamaConfig(attention_bias=True, mlp_bias=True, head_dim=32, tie_word_embeddings=False,
                                         rope_parameters=rope, **common))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.1)
    return model


@pytest.mark.parametrize("kind", ["mistral", "llama3-biases-wide-heads"])
def test_architecture_variants_match_hf(kind, tmp_path):
    torch.manual_seed(0)
    model = _variant(kind).eval()
    model.save_pretrained(tmp_path)
    runner = make_runner(tmp_path)
    tokens = [int(t) for t in torch.randint(0, 128, (100,))]
    table = list(range(25))
    logits = torch.cat([runner.execute([ForwardInput(tokens[:90], 0, table, 90)]),
                        runner.execute([ForwardInput(tokens[90:], 90, table, 10)])])
    torch.testing.assert_close(logits, hf_logits(model, tokens), atol=1e-5, rtol=1e-5)


def test_decode_step_matches_hf_and_writes_keys_once(checkpoint):
    """The pure decode step (one token per sequence, cache read-only) over contexts of 0, 5 and
    8 tokens (a block boundary): HF's logits, and the same keys the general forward writes."""
    folder, model = checkpoint
    runner, reference = make_runner(folder), make_runner(folder)
    prompts = [random_prompt(1, seed=7), random_prompt(6, seed=8), random_prompt(9, seed=9)]
    tables = [[4, 0], [1, 7], [2, 5, 3]]
    pasts = [ForwardInput(p[:-1], 0, t, 0) for p, t in zip(prompts, tables) if len(p) > 1]
    for r in (runner, reference):
        r.execute(pasts)
    decodes = [ForwardInput(p[-1:], len(p) - 1, t, 1) for p, t in zip(prompts, tables)]
    logits = runner.execute_decode(decodes)
    expected = torch.stack([hf_logits(model, p)[-1] for p in prompts])
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    reference._execute_mixed(decodes)  # the general forward writes as it goes
    torch.testing.assert_close(runner.kv_cache, reference.kv_cache, atol=1e-6, rtol=1e-6)


def test_padding_rows_of_a_decode_batch_change_nothing(llama_checkpoint):
    folder, _ = llama_checkpoint
    runner = make_runner(folder)
    prompt = random_prompt(7, seed=10)
    runner.execute([ForwardInput(prompt[:-1], 0, [3, 1], 0)])
    before = runner.kv_cache.clone()
    tokens = torch.tensor([prompt[-1], 0, 0])
    positions = torch.tensor([6, 0, 0])
    tables = torch.tensor([[3, 1, 0], [0, 0, 0], [0, 0, 0]])  # two padding rows on block 0
    padded = runner.forward_decode(tokens, positions, tables, torch.tensor([3 * 4 + 2]), compiled=False)
    alone = runner.model.decode(tokens[:1], positions[:1], tables[:1, :2], before)[0]
    assert padded.shape[0] == 1
    torch.testing.assert_close(padded, alone)
    written = (runner.kv_cache != before).nonzero()[:, 3].unique().tolist()
    assert written == [3], "only the real row's slot (block 3) is written"
