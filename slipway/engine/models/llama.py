"""The Llama family (Llama 2/3, SmolLM2, Mistral, Qwen2) over a paged KV cache.

One forward takes a flat batch of tokens with their positions (prefill chunks and decodes of
many sequences together) and returns logits only for the rows the caller samples from. The
q/k/v projections are fused into one matmul and gate/up into another; Qwen2's q/k/v biases ride
on the fused projection. Parameter names differ from Hugging Face's only where fused; `loader`
maps checkpoint tensors onto them.

Two entry points share the weights and the arithmetic:

    forward  any flat batch (prefill chunks, decodes, drafts); writes the step's keys and values
             into the cache as each layer computes them
    decode   one new token per sequence; a pure function of its inputs (the cache is only read,
             the step's keys and values come back for the caller to write), so it compiles

For bfloat16 on CPU the runner sets `fused_ops` (models/cpu_layers.py) and `forward` runs on a
residual stream updated in place: each layer's closing add rides on the next norm, rotation on
the cache write, SiLU on the multiply, one C call each (`forward_fused`, and the MLP's `ops`).
The arithmetic is the same up to bfloat16 rounding; float32 never takes this path.

`forward` takes the step's LoRA adapters too (`lora`, see engine/lora/batch.py): each adapted
projection adds its rows' deltas after the base product, `y = lora.apply(name, x, base(x))`.
Without one (no row of the step has an adapter) the code path is the base model's alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from slipway.engine.models.attention import (AttentionMetadata, attend_written, block_rows, decode_attention,
                                             paged_attention)
from slipway.engine.models.config import ModelConfig
from slipway.engine.models.layers import RMSNorm, RotaryEmbedding, apply_rotary_one

if TYPE_CHECKING:  # the lora package imports this module (merge_lora)
    from slipway.engine.lora.batch import LayerLora, LoraBatch
    from slipway.engine.models.cpu_layers import FusedLayerOps

KVCache = tuple[torch.Tensor, torch.Tensor]
Rope = tuple[torch.Tensor, torch.Tensor]
"""cos and sin per token of the batch, [tokens, 1, head_dim]."""


class LlamaAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        self.q_size = config.num_heads * config.head_dim
        self.kv_size = config.num_kv_heads * config.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, self.q_size + 2 * self.kv_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(self.q_size, config.hidden_size, bias=config.o_bias)

    def forward(self, hidden: torch.Tensor, rope: Rope, kv_cache: KVCache,
                meta: AttentionMetadata, compute_dtype: torch.dtype, lora: LayerLora | None = None) -> torch.Tensor:
        q, k, v = self._project(hidden, rope, lora)
        return self._output(paged_attention(q, k, v, kv_cache[0], kv_cache[1], meta, compute_dtype).flatten(1), lora)

    def forward_fused(self, normed: torch.Tensor, positions: torch.Tensor, rotary: RotaryEmbedding,
                      kv_cache: KVCache, meta: AttentionMetadata, compute_dtype: torch.dtype, ops: FusedLayerOps,
                      lora: LayerLora | None = None) -> torch.Tensor:
        """`forward` with rotation and the cache write fused into one call (`ops`, bfloat16 on CPU)."""
        num_tokens = normed.shape[0]
        qkv = self._qkv(normed, lora).contiguous()
        ops.rope_and_cache(qkv, positions, rotary, self.num_heads, self.num_kv_heads, kv_cache[0], kv_cache[1],
                           meta.slot_mapping)
        q = qkv[:, : self.q_size].view(num_tokens, self.num_heads, self.head_dim)
        k = qkv[:, self.q_size: self.q_size + self.kv_size].view(num_tokens, self.num_kv_heads, self.head_dim)
        v = qkv[:, self.q_size + self.kv_size:].view(num_tokens, self.num_kv_heads, self.head_dim)
        return self._output(attend_written(q, k, v, kv_cache[0], kv_cache[1], meta, compute_dtype).flatten(1), lora)

    def decode(self, hidden: torch.Tensor, rope: Rope, kv_cache: KVCache, rows: torch.Tensor,
               context_lens: torch.Tensor, compute_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(output, the tokens' keys, their values); reads the cache only."""
        q, k, v = self._project(hidden, rope)
        out = decode_attention(q, k, v, kv_cache[0], kv_cache[1], rows, context_lens, compute_dtype)
        return self.o_proj(out.flatten(1)), k, v

    def _project(self, hidden: torch.Tensor, rope: Rope,
                 lora: LayerLora | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        num_tokens = hidden.shape[0]
        qkv = self._qkv(hidden, lora)
        # Queries and keys sit side by side in qkv: rotated together, in one pass of each op.
        qk = qkv[:, : self.q_size + self.kv_size].view(num_tokens, self.num_heads + self.num_kv_heads, self.head_dim)
        qk = apply_rotary_one(qk, *rope)
        q, k = qk.split([self.num_heads, self.num_kv_heads], dim=1)
        v = qkv[:, self.q_size + self.kv_size:].view(num_tokens, self.num_kv_heads, self.head_dim)
        return q, k, v

    def _qkv(self, hidden: torch.Tensor, lora: LayerLora | None) -> torch.Tensor:
        qkv = self.qkv_proj(hidden)
        return qkv if lora is None else lora.apply("qkv_proj", hidden, qkv)

    def _output(self, attended: torch.Tensor, lora: LayerLora | None) -> torch.Tensor:
        out = self.o_proj(attended)
        return out if lora is None else lora.apply("o_proj", attended, out)


class LlamaMLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor, lora: LayerLora | None = None, ops: FusedLayerOps | None = None) -> torch.Tensor:
        """`ops` (bfloat16 on CPU): the activation fused into one call."""
        gate_up = self.gate_up_proj(x)
        if lora is not None:
            gate_up = lora.apply("gate_up_proj", x, gate_up)
        if ops is not None:
            hidden = ops.silu_and_mul(gate_up)
        else:
            gate, up = gate_up.split(self.intermediate_size, dim=-1)
            hidden = F.silu(gate) * up
        out = self.down_proj(hidden)
        return out if lora is None else lora.apply("down_proj", hidden, out)


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = LlamaAttention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = LlamaMLP(config)

    def forward(self, hidden: torch.Tensor, rope: Rope, kv_cache: KVCache,
                meta: AttentionMetadata, compute_dtype: torch.dtype, lora: LayerLora | None = None) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.input_layernorm(hidden), rope, kv_cache, meta, compute_dtype, lora)
        return hidden + self.mlp(self.post_attention_layernorm(hidden), lora)

    def forward_fused(self, normed: torch.Tensor, residual: torch.Tensor, positions: torch.Tensor,
                      rotary: RotaryEmbedding, kv_cache: KVCache, meta: AttentionMetadata, compute_dtype: torch.dtype,
                      ops: FusedLayerOps, lora: LayerLora | None = None) -> torch.Tensor:
        """The layer on the residual stream, for the fused ops: `normed` is this layer's input norm
        of `residual`; adds the attention's output into `residual` (in place) and returns the
        MLP's output, which the caller adds in with the next norm (one call for both)."""
        attended = self.self_attn.forward_fused(normed, positions, rotary, kv_cache, meta, compute_dtype, ops, lora)
        return self.mlp(ops.add_rms_norm(attended, residual, self.post_attention_layernorm), lora, ops)

    def decode(self, hidden: torch.Tensor, rope: Rope, kv_cache: KVCache, rows: torch.Tensor,
               context_lens: torch.Tensor, compute_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attended, k, v = self.self_attn.decode(self.input_layernorm(hidden), rope, kv_cache, rows,
                                               context_lens, compute_dtype)
        hidden = hidden + attended
        return hidden + self.mlp(self.post_attention_layernorm(hidden)), k, v


class LlamaForCausalLM(nn.Module):
    """Embeddings, decoder layers, final norm and LM head; see the module docstring."""

    def __init__(self, config: ModelConfig, max_positions: int) -> None:
        super().__init__()
        self.config = config
        # One cos/sin table for all layers, looked up once per forward.
        self.rotary = RotaryEmbedding(config.head_dim, max_positions, config.rope_theta, config.rope_scaling)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.fused_ops: FusedLayerOps | None = None
        """Set by the runner for bfloat16 on CPU (models/cpu_layers.py): `forward` then runs the
        operations between the matrix products fused."""

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, kv_caches: list[KVCache],
                meta: AttentionMetadata, logits_indices: torch.Tensor,
                compute_dtype: torch.dtype = torch.float32, lora: LoraBatch | None = None) -> torch.Tensor:
        """Flat tokens [N] at positions [N] -> float32 logits [len(logits_indices), vocab]; `lora`:
        the step's adapters, if any row has one."""
        hidden = self.embed_tokens(input_ids)
        if self.fused_ops is not None:
            return self._forward_fused(hidden, positions, kv_caches, meta, logits_indices, compute_dtype, lora,
                                       self.fused_ops)
        rope = self.rotary.cos_sin(positions, hidden.dtype)
        for index, (layer, kv_cache) in enumerate(zip(self.layers, kv_caches)):
            hidden = layer(hidden, rope, kv_cache, meta, compute_dtype, lora.layer(index) if lora is not None else None)
        # Norm and LM head only for the rows that are sampled: a prefill chunk needs at most one.
        hidden = self.norm(hidden[logits_indices])
        return self.lm_head(hidden).float()

    def _forward_fused(self, residual: torch.Tensor, positions: torch.Tensor, kv_caches: list[KVCache],
                       meta: AttentionMetadata, logits_indices: torch.Tensor, compute_dtype: torch.dtype,
                       lora: LoraBatch | None, ops: FusedLayerOps) -> torch.Tensor:
        """`forward` on the residual stream (`residual`, the embeddings, updated in place): each
        layer's closing add rides on the next layer's input norm."""
        normed = ops.rms_norm(residual, self.layers[0].input_layernorm)
        last = len(self.layers) - 1
        for index, (layer, kv_cache) in enumerate(zip(self.layers, kv_caches)):
            mlp_out = layer.forward_fused(normed, residual, positions, self.rotary, kv_cache, meta, compute_dtype, ops,
                                          lora.layer(index) if lora is not None else None)
            if index < last:
                normed = ops.add_rms_norm(mlp_out, residual, self.layers[index + 1].input_layernorm)
            else:
                residual += mlp_out
        return self.lm_head(self.norm(residual[logits_indices])).float()

    def decode(self, input_ids: torch.Tensor, positions: torch.Tensor, block_tables: torch.Tensor,
               kv_cache: torch.Tensor, compute_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per sequence -> (float32 logits [seqs, vocab], new keys and values
        [layers, 2, kv_heads, seqs, head_dim]); see the module docstring.

        kv_cache: [layers, 2, kv_heads, blocks, block_size, head_dim], read only. A token at
        position p attends to the p cached tokens its block table holds, and to itself.
        """
        hidden = self.embed_tokens(input_ids)
        rope = self.rotary.cos_sin(positions, hidden.dtype)
        rows = block_rows(block_tables, kv_cache[0, 0])  # where each layer's blocks sit: the same for all
        new_kv = []
        for index, layer in enumerate(self.layers):
            hidden, k, v = layer.decode(hidden, rope, (kv_cache[index, 0], kv_cache[index, 1]), rows,
                                        positions, compute_dtype)
            new_kv.append(torch.stack((k, v)).transpose(1, 2))
        logits = self.lm_head(self.norm(hidden)).float()
        return logits, torch.stack(new_kv).to(kv_cache.dtype)
