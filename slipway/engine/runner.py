"""The model runner: owns the model and its KV cache tensors, and runs one step's forward.

It knows nothing of requests or scheduling. The engine hands it one `ForwardInput` per
sequence (the new tokens, where they start, the block table, how many logits rows it wants)
and gets back float32 logits, rows in the order asked for. Here the inputs become the flat
batch the model runs on: token ids, positions, cache slots, and the attention metadata that
says what each token attends to (see `models/attention.py` for the layout).

A sequence with a LoRA adapter names the slot its adapter holds (`lora_slot`); a step with any
such sequence runs the general forward with a `LoraBatch` (lora/batch.py) built from the loaded
adapters' stack and each adapted sequence's span of rows, its decode rows ordered by slot so
that rows of one adapter sit together. A step without one runs exactly as before.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import torch

from slipway.engine.lora.batch import LoraBatch
from slipway.engine.lora.stack import LoraStack
from slipway.engine.models.attention import AttentionMetadata, BatchedQueries, PrefillSpan
from slipway.engine.models.compiled import MIN_BATCH_SIZE, MIN_BLOCK_TABLE_WIDTH, CompiledDecode
from slipway.engine.models.config import ModelConfig
from slipway.engine.models.cpu_attention import PagedAttentionKernel
from slipway.engine.models.cpu_layers import FusedLayerOps
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
    lora_slot: int | None = None
    """The slot of the sequence's LoRA adapter in the step's `LoraStack`; None: the base model."""


def kv_cache_bytes_per_block(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    """Bytes one block takes across all layers, keys and values."""
    element = torch.empty((), dtype=dtype).element_size()
    return config.num_layers * 2 * block_size * config.num_kv_heads * config.head_dim * element


class ModelRunner:
    """Runs the model over the paged cache; see the module docstring."""

    def __init__(self, model: LlamaForCausalLM, *, num_blocks: int, block_size: int,
                 kv_dtype: torch.dtype, compute_dtype: torch.dtype, max_batched_query_len: int = 1,
                 attention_kernel: PagedAttentionKernel | None = None) -> None:
        config = model.config
        self.model = model
        self.device = next(model.parameters()).device
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.compute_dtype = compute_dtype
        self.max_batched_query_len = max_batched_query_len
        # Zeroed, not empty: masked-out slots still enter the value matmul with weight 0, and
        # 0 * NaN from uninitialised memory would poison the output.
        # Heads before blocks: see models/attention.py for why.
        self.kv_cache = torch.zeros(
            config.num_layers, 2, config.num_kv_heads, num_blocks, block_size, config.head_dim,
            dtype=kv_dtype, device=self.device,
        )
        self.kv_caches = [(self.kv_cache[i, 0], self.kv_cache[i, 1]) for i in range(config.num_layers)]
        # [layers, 2, kv_heads, slots, head_dim]: where a decode step's keys and values land.
        self._cache_slots = self.kv_cache.flatten(3, 4)
        self.compiled_decode: CompiledDecode | None = None
        """Set by `enable_compiled_decode`; pure-decode steps then run compiled."""
        supported = attention_kernel is not None and attention_kernel.supports(self.kv_cache)
        self.attention_kernel = attention_kernel if supported else None
        """The CPU attention kernels (models/cpu_attention.py) for this cache; None: PyTorch attends."""
        weights_dtype = model.embed_tokens.weight.dtype
        if (self.attention_kernel is not None and compute_dtype == weights_dtype
                and FusedLayerOps.applies_to(weights_dtype, self.kv_cache, config.head_dim)):
            # The same library holds the fused layer ops; the general forward runs through them.
            model.fused_ops = FusedLayerOps(self.attention_kernel.library)

    def enable_compiled_decode(self) -> float:
        """Compile the decode step now; returns the seconds it took."""
        compiled = CompiledDecode(self.model, self.kv_cache, self.compute_dtype)
        seconds = compiled.warm_up()
        self.compiled_decode = compiled
        return seconds

    @torch.inference_mode()
    def execute(self, inputs: Sequence[ForwardInput], lora: LoraStack | None = None) -> torch.Tensor:
        """Forward all inputs as one flat batch -> logits [sum(num_logits), vocab], in input order.

        Steps of one token per sequence run the compiled decode step when there is one; every
        other step, and all of them when nothing is compiled, runs the general forward, which
        eagerly is as fast for decodes as the decode step would be. `lora`: the loaded adapters,
        given when some input has a `lora_slot` (such steps always run the general forward).
        """
        if lora is not None:
            return self._execute_mixed(inputs, lora)
        if self.compiled_decode is not None and all(len(x.token_ids) == 1 and x.num_logits == 1 for x in inputs):
            return self.execute_decode(inputs)
        return self._execute_mixed(inputs)

    # -- one token per sequence ------------------------------------------------------------

    @torch.inference_mode()
    def execute_decode(self, inputs: Sequence[ForwardInput]) -> torch.Tensor:
        """`execute` for inputs of one token and one logits row each, through the model's decode
        step (compiled when there is one; `execute` takes this way only then)."""
        size = self.block_size
        num_seqs = len(inputs)
        compiled = self.compiled_decode is not None
        num_rows = max(num_seqs, MIN_BATCH_SIZE) if compiled else num_seqs
        # The past of a token at position p is p tokens: the first ceil(p / size) blocks.
        width = max(MIN_BLOCK_TABLE_WIDTH, max(-(-x.start_position // size) for x in inputs))
        token_ids = [x.token_ids[0] for x in inputs]
        positions = [x.start_position for x in inputs]
        tables = [list(x.block_table[:width]) for x in inputs]
        slots = [x.block_table[p // size] * size + p % size for x, p in zip(inputs, positions)]
        # Padding rows: token 0 at position 0 attends to itself only; its keys are never written.
        padding = num_rows - num_seqs
        token_ids += [0] * padding
        positions += [0] * padding
        tables = [t + [0] * (width - len(t)) for t in tables] + [[0] * width] * padding
        return self.forward_decode(self._tensor(token_ids), self._tensor(positions), self._tensor(tables),
                                   self._tensor(slots), compiled=compiled)

    def forward_decode(self, token_ids: torch.Tensor, positions: torch.Tensor, block_tables: torch.Tensor,
                       slots: torch.Tensor, *, compiled: bool) -> torch.Tensor:
        """The model's decode step, then the step's keys and values written into `slots`;
        logits of the first len(slots) rows (the rest are padding)."""
        if compiled:
            assert self.compiled_decode is not None
            logits, new_kv = self.compiled_decode(token_ids, positions, block_tables)
        else:
            logits, new_kv = self.model.decode(token_ids, positions, block_tables, self.kv_cache,
                                               self.compute_dtype)
        num_seqs = slots.shape[0]
        self._cache_slots.index_copy_(3, slots, new_kv[:, :, :, :num_seqs])
        return logits[:num_seqs]

    # -- any mix of prefill chunks, decodes and drafts -------------------------------------

    def _execute_mixed(self, inputs: Sequence[ForwardInput], lora: LoraStack | None = None) -> torch.Tensor:
        prefill = [i for i, x in enumerate(inputs) if len(x.token_ids) > self.max_batched_query_len]
        batched = [i for i, x in enumerate(inputs) if len(x.token_ids) <= self.max_batched_query_len]
        if lora is not None:  # base rows first, then each adapter's rows together
            batched.sort(key=lambda i: -1 if inputs[i].lora_slot is None else inputs[i].lora_slot)
        order = prefill + batched
        token_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        flat_start: dict[int, int] = {}
        size = self.block_size
        for i in order:
            x = inputs[i]
            flat_start[i] = len(token_ids)
            token_ids.extend(x.token_ids)
            span = range(x.start_position, x.start_position + len(x.token_ids))
            positions.extend(span)
            table = x.block_table
            slots.extend(table[p // size] * size + p % size for p in span)
        logits_indices: list[int] = []
        for i, x in enumerate(inputs):
            end = flat_start[i] + len(x.token_ids)
            logits_indices.extend(range(end - x.num_logits, end))

        meta = AttentionMetadata(
            slot_mapping=self._tensor(slots),
            prefills=[self._prefill_span(inputs[i], flat_start[i]) for i in prefill],
            batched=self._batched_queries([inputs[i] for i in batched], flat_start[batched[0]]) if batched else None,
            kernel=self.attention_kernel,
        )
        batch = None
        if lora is not None:
            spans = [(flat_start[i], len(x.token_ids), x.lora_slot) for i, x in enumerate(inputs)
                     if x.lora_slot is not None]
            batch = LoraBatch(lora, spans)
        return self.forward_mixed(self._tensor(token_ids), self._tensor(positions), meta,
                                  self._tensor(logits_indices), lora=batch)

    def forward_mixed(self, token_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
                      logits_indices: torch.Tensor, lora: LoraBatch | None = None) -> torch.Tensor:
        """The model's general forward (eager), writing the step's keys and values as it goes."""
        return self.model(token_ids, positions, self.kv_caches, meta, logits_indices,
                          compute_dtype=self.compute_dtype, lora=lora)

    def _tensor(self, values: Sequence[int] | list[list[int]]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)

    def _num_blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _prefill_span(self, x: ForwardInput, start: int) -> PrefillSpan:
        context_len = x.start_position + len(x.token_ids)
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
        counts = [len(x.token_ids) for x in group]
        lengths = self._tensor(counts)
        query_valid = torch.arange(max_queries, device=self.device)[None, :] < lengths[:, None]
        key_pos = torch.arange(max_blocks * self.block_size, device=self.device)
        key_mask = key_pos[None, None, :] <= self._tensor(query_pos)[:, :, None]
        return BatchedQueries(
            start=start,
            token_index=self._tensor(token_index),
            query_valid=query_valid,
            block_tables=self._tensor(tables),
            key_mask=key_mask.unsqueeze(1),
            query_starts=self._tensor([0, *itertools.accumulate(counts)]),
            context_lens=self._tensor([x.start_position + len(x.token_ids) for x in group]),
        )
