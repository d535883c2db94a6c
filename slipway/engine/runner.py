"""The model runner: owns the model and its KV cache tensors, and runs one step's forward.

It knows nothing of requests or scheduling. The engine hands it one `ForwardInput` per
sequence (the new tokens, where they start, the block table, how many logits rows it wants)
and gets back float32 logits, rows in the order asked for. Here the inputs become the flat
batch the model runs on: token ids, positions, cache slots, and the attention metadata that
says what each token attends to (see `models/attention.py` for the layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from slipway.engine.models.attention import AttentionMetadata, BatchedQueries, PrefillSpan
from slipway.engine.models.config import ModelConfig
from slipway.engine.models.llama import LlamaForCausalLM


@dataclass(frozen=True)
class ForwardInput:
    """One sequence's share of a step."""

    token_ids: Sequence[int]
    """The tokens to compute this step (a prefill chunk, one decode token, or token + drafts)."""
    start_position: int
    """Position of the first of them: how many of the sequence's tokens the cache holds already."""
    block_table: Sequence[int]
    """The sequence's blocks, enough to hold start_position + len(token_ids) tokens."""
    num_logits: int
    """How many of the last tokens need logits: 0 (a chunk mid-prompt), 1, or 1 + drafts."""


def kv_cache_bytes_per_block(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    """Bytes one block takes across all layers, keys and values."""
    element = torch.empty((), dtype=dtype).element_size()
    return config.num_layers * 2 * block_size * config.num_kv_heads * config.head_dim * element


class ModelRunner:
    """Runs the model over the paged cache; see the module docstring."""

    def __init__(self, model: LlamaForCausalLM, *, num_blocks: int, block_size: int,
                 kv_dtype: torch.dtype, compute_dtype: torch.dtype, max_batched_query_len: int = 1) -> None:
        config = model.config
        self.model = model
        self.device = next(model.parameters()).device
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.compute_dtype = compute_dtype
        self.max_batched_query_len = max_batched_query_len
        # Zeroed, not empty: masked-out slots still enter the value matmul with weight 0, and
        # 0 * NaN from uninitialised memory would poison the output.
        self.kv_cache = torch.zeros(
            config.num_layers, 2, num_blocks, block_size, config.num_kv_heads, config.head_dim,
            dtype=kv_dtype, device=self.device,
        )
        self.kv_caches = [(self.kv_cache[i, 0], self.kv_cache[i, 1]) for i in range(config.num_layers)]

    @torch.inference_mode()
    def execute(self, inputs: Sequence[ForwardInput]) -> torch.Tensor:
        """Forward all inputs as one flat batch -> logits [sum(num_logits), vocab], in input order."""
        prefill = [i for i, x in enumerate(inputs) if len(x.token_ids) > self.max_batched_query_len]
        batched = [i for i, x in enumerate(inputs) if len(x.token_ids) <= self.max_batched_query_len]
        order = prefill + batched
        token_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        flat_start: dict[int, int] = {}
        for i in order:
            x = inputs[i]
            flat_start[i] = len(token_ids)
            token_ids.extend(x.token_ids)
            span = range(x.start_position, x.start_position + len(x.token_ids))
            positions.extend(span)
            table, size = x.block_table, self.block_size
            slots.extend(table[p // size] * size + p % size for p in span)
        logits_indices: list[int] = []
        for i, x in enumerate(inputs):
            end = flat_start[i] + len(x.token_ids)
            logits_indices.extend(range(end - x.num_logits, end))

        meta = AttentionMetadata(
            slot_mapping=self._tensor(slots),
            prefills=[self._prefill_span(inputs[i], flat_start[i]) for i in prefill],
            batched=self._batched_queries([inputs[i] for i in batched], flat_start[batched[0]]) if batched else None,
        )
        return self.model(
            self._tensor(token_ids), self._tensor(positions), self.kv_caches, meta,
            self._tensor(logits_indices), compute_dtype=self.compute_dtype,
        )

    def _tensor(self, values: Sequence[int] | list[list[int]]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)

    def _num_blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _prefill_span(self, x: ForwardInput, start: int) -> PrefillSpan:
        context_len = x.start_position + len(x.token_ids)
        table = None
        if x.start_position > 0:
            table = self._tensor(list(x.block_table[: self._num_blocks_for(context_len)]))
        return PrefillSpan(start=start, num_tokens=len(x.token_ids), context_len=context_len, block_table=table)

    def _batched_queries(self, group: list[ForwardInput], start: int) -> BatchedQueries:
        max_queries = max(len(x.token_ids) for x in group)
        max_blocks = max(self._num_blocks_for(x.start_position + len(x.token_ids)) for x in group)
        token_index, query_pos, tables = [], [], []
        offset = 0
        for x in group:
            n = len(x.token_ids)
            token_index.append([offset + q if q < n else 0 for q in range(max_queries)])
            # Padding rows may see key 0 only: a row with nothing to attend would yield NaN.
            query_pos.append([x.start_position + q if q < n else 0 for q in range(max_queries)])
            used = list(x.block_table[: self._num_blocks_for(x.start_position + n)])
            tables.append(used + [0] * (max_blocks - len(used)))
            offset += n
        lengths = self._tensor([len(x.token_ids) for x in group])
        query_valid = torch.arange(max_queries, device=self.device)[None, :] < lengths[:, None]
        key_pos = torch.arange(max_blocks * self.block_size, device=self.device)
        key_mask = key_pos[None, None, :] <= self._tensor(query_pos)[:, :, None]
        return BatchedQueries(
            start=start,
            token_index=self._tensor(token_index),
            query_valid=query_valid,
            block_tables=self._tensor(tables),
            key_mask=key_mask.unsqueeze(1),
        )
