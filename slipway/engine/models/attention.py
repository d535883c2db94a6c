"""Attention over the paged KV cache, for a flat batch that mixes prefill chunks and decodes.

The cache of one layer is two tensors (keys, values) of shape

    [num_kv_heads, num_blocks, block_size, head_dim]

and a sequence's tokens live in the blocks its block table names, in order: token at position
p sits in block `block_table[p // block_size]`, row `p % block_size` (its *slot* is
`block_id * block_size + p % block_size`). Heads come first so that gathering a batch's blocks
yields [kv_heads, seqs, tokens, head_dim]: already the layout of a batched matmul, with no
transposing copy. Blocks are gathered as whole rows of the cache seen as [kv_heads * blocks,
block_size * head_dim] (`block_rows`, `gather_blocks`): `index_select` copies each row in one
go, several times faster than advanced indexing, which copies element by element.

A step's tokens arrive flat, prefill spans first, then the batched group:

    flat tokens: [ span A (prefill chunk) | span B (prefill) | d0 d1 d2 (decode) ... ]
                  ^ PrefillSpan each: one attention call     ^ BatchedQueries: one call for all

`paged_attention` first writes the step's new keys and values into their slots (one
`index_copy_`; on the fused bfloat16 CPU path `cpu_layers.c` has written them already and
`attend_written` is called instead), then attends: a prefill span over its own fresh keys when
it has no past, otherwise over the blocks its table names; the batched group (sequences with
only a few new tokens: decodes and speculative verification) reads all its blocks in one gather
and one call, or, on CPU, goes to the kernels of `cpu_attention.c` (prefill spans too), which
read the blocks where they lie.
Only the blocks a sequence uses are read, never the whole cache. Grouped-query attention never
repeats keys: the query heads that share a KV head become extra query rows (a reshape), and spans
use SDPA's `enable_gqa`. Attention runs in `compute_dtype` (the weights' dtype, but float32 for
float16 on CPU) whatever the cache's dtype.

`decode_attention` is the pure variant for steps where every sequence brings one token: it reads
the cache and never writes it, attending over each sequence's cached past plus the token's own
fresh key and value, so it can run inside a compiled graph; the caller writes the step's keys
and values into the cache once, after the forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from slipway.engine.models.cpu_attention import PagedAttentionKernel


@dataclass
class PrefillSpan:
    """One sequence's chunk of several new tokens."""

    start: int
    """Index of the chunk's first token in the flat batch."""
    num_tokens: int
    context_len: int
    """Tokens of the sequence in the cache once this step has written (past + num_tokens)."""
    block_table: torch.Tensor
    """[blocks] long: the blocks holding the sequence's first context_len tokens."""

    @property
    def past(self) -> int:
        return self.context_len - self.num_tokens


@dataclass
class BatchedQueries:
    """Sequences with few new tokens each, attended together; they run to the end of the batch."""

    start: int
    """Index in the flat batch of the group's first token."""
    token_index: torch.Tensor
    """[seqs, max_queries] long: position (relative to `start`) of each query; padding points at 0."""
    query_valid: torch.Tensor
    """[seqs, max_queries] bool: which entries of `token_index` are real queries."""
    block_tables: torch.Tensor
    """[seqs, max_blocks] long, padded with any valid block id (masked out)."""
    key_mask: torch.Tensor
    """[seqs, 1, max_queries, max_blocks * block_size] bool: True where a query may attend."""
    query_starts: torch.Tensor
    """[seqs + 1] long: the group's queries of sequence s are its flat rows query_starts[s] .. [s+1] - 1."""
    context_lens: torch.Tensor
    """[seqs] long: tokens of each sequence in the cache once this step has written."""


@dataclass
class AttentionMetadata:
    """Where this step's tokens go in the cache and what each attends to."""

    slot_mapping: torch.Tensor
    """[tokens] long: the cache slot of each token of the flat batch."""
    prefills: list[PrefillSpan]
    batched: BatchedQueries | None
    kernel: PagedAttentionKernel | None = None
    """The CPU kernels (models/cpu_attention.py), reading blocks in place; None: gather the
    blocks and use SDPA."""


def paged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                    compute_dtype: torch.dtype) -> torch.Tensor:
    """Write this step's k/v into the cache, then attend.

    q: [tokens, heads, head_dim]; k, v: [tokens, kv_heads, head_dim] -> [tokens, heads, head_dim].
    """
    num_kv_heads, head_dim = k_cache.shape[0], k_cache.shape[3]
    k_cache.view(num_kv_heads, -1, head_dim).index_copy_(1, meta.slot_mapping, k.transpose(0, 1).to(k_cache.dtype))
    v_cache.view(num_kv_heads, -1, head_dim).index_copy_(1, meta.slot_mapping, v.transpose(0, 1).to(v_cache.dtype))
    return attend_written(q, k, v, k_cache, v_cache, meta, compute_dtype)


def attend_written(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                   v_cache: torch.Tensor, meta: AttentionMetadata, compute_dtype: torch.dtype) -> torch.Tensor:
    """`paged_attention` once the step's keys and values are in the cache (the fused layer ops
    write them as they rotate them); same arguments, same result."""
    out = torch.empty_like(q)
    for span in meta.prefills:
        end = span.start + span.num_tokens
        if meta.kernel is not None:
            in_place = meta.kernel.prefill(q[span.start:end], k_cache, v_cache, span.block_table, span.past)
            if in_place is not None:
                out[span.start:end] = in_place
                continue
        if span.past == 0:  # the chunk attends to itself only: its fresh keys, no gather
            keys, values = k[span.start:end].transpose(0, 1), v[span.start:end].transpose(0, 1)
        else:
            rows = block_rows(span.block_table, k_cache)
            keys = gather_blocks(k_cache, rows).to(compute_dtype)[:, : span.context_len]
            values = gather_blocks(v_cache, rows).to(compute_dtype)[:, : span.context_len]
        out[span.start:end] = _attend_span(q[span.start:end], keys, values, span.past, compute_dtype)
    if meta.batched is not None:
        group = meta.batched
        if meta.kernel is not None:
            in_place = meta.kernel(q[group.start:], k_cache, v_cache, group.block_tables, group.query_starts,
                                   group.context_lens)
            if in_place is not None:  # rows come back in flat order
                out[group.start:] = in_place
                return out
        attended = _attend_batched(q[group.start:], k_cache, v_cache, group, compute_dtype)
        if group.token_index.shape[1] == 1:  # one query per sequence: rows are already in order
            out[group.start:] = attended.squeeze(1)
        else:
            out[group.start:][group.token_index[group.query_valid]] = attended[group.query_valid]
    return out


def block_rows(block_tables: torch.Tensor, cache: torch.Tensor) -> torch.Tensor:
    """Rows of one layer's cache, seen as [kv_heads * blocks, block_size * head_dim], that hold
    the blocks the tables name: [kv_heads, *block_tables.shape]. The same for every layer."""
    num_kv_heads, num_blocks = cache.shape[0], cache.shape[1]
    heads = torch.arange(num_kv_heads, device=block_tables.device) * num_blocks
    return heads.view(-1, *([1] * block_tables.dim())) + block_tables


def gather_blocks(cache: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """A copy of the blocks at `rows` (from `block_rows`), their tokens in a row:
    [kv_heads, *rows.shape[1:-1], rows.shape[-1] * block_size, head_dim], in the cache's dtype."""
    num_kv_heads, num_blocks, block_size, head_dim = cache.shape
    flat = cache.view(num_kv_heads * num_blocks, block_size * head_dim).index_select(0, rows.flatten())
    return flat.view(*rows.shape[:-1], rows.shape[-1] * block_size, head_dim)


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                     v_cache: torch.Tensor, rows: torch.Tensor, context_lens: torch.Tensor,
                     compute_dtype: torch.dtype) -> torch.Tensor:
    """One new token per sequence over its cached past and itself; the cache is only read.

    q: [seqs, heads, head_dim]; k, v: [seqs, kv_heads, head_dim], the tokens' own keys and values;
    rows: `block_rows` of the block tables [seqs, max_blocks] (padded with any valid block id);
    context_lens: [seqs], how many cached tokens each sequence attends to before its own.
    -> [seqs, heads, head_dim].
    """
    num_seqs, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    per_kv = num_heads // num_kv_heads
    # Query heads sharing a KV head are the rows of one product: [kv_heads, seqs, per_kv, head_dim].
    qg = q.view(num_seqs, num_kv_heads, per_kv, head_dim).transpose(0, 1).to(compute_dtype) * head_dim ** -0.5
    keys = gather_blocks(k_cache, rows)  # [kv_heads, seqs, past, head_dim], cache precision
    values = gather_blocks(v_cache, rows)
    # Compiled, products summed by hand fuse with the gather and the conversion into one pass
    # over the cached blocks; a matmul would first copy every gathered block out in compute
    # precision. Eager, the matmul is the fast way.
    fused = torch.compiler.is_compiling()
    if fused:
        past_scores = (qg[:, :, :, None, :] * keys[:, :, None, :, :].to(compute_dtype)).sum(-1)
    else:
        past_scores = qg @ keys.to(compute_dtype).transpose(-1, -2)
    key_positions = torch.arange(past_scores.shape[-1], device=q.device)
    beyond = key_positions[None, :] >= context_lens[:, None]
    past_scores = past_scores.masked_fill(beyond[None, :, None, :], float("-inf"))
    own_k = k.transpose(0, 1).to(compute_dtype)[:, :, None, :]
    own_v = v.transpose(0, 1).to(compute_dtype)[:, :, None, :]
    own_score = (qg * own_k).sum(-1, keepdim=True)
    probs = torch.cat((past_scores, own_score), dim=-1).softmax(dim=-1)
    past_probs, own_prob = probs[..., :-1], probs[..., -1:]
    if fused:
        out = (past_probs[..., None] * values[:, :, None, :, :].to(compute_dtype)).sum(-2)
    else:
        out = past_probs @ values.to(compute_dtype)
    out = out + own_prob * own_v
    return out.transpose(0, 1).reshape(num_seqs, num_heads, head_dim).to(q.dtype)


def _attend_span(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, past: int,
                 compute_dtype: torch.dtype) -> torch.Tensor:
    """One sequence: q [T, H, D] over keys/values [KV, past + T, D], causal from `past`."""
    num_tokens = q.shape[0]
    # 4-D inputs let SDPA pick its fused CPU kernel; enable_gqa shares KV heads without a copy.
    qh = q.to(compute_dtype).transpose(0, 1)[None]
    kh = keys.to(compute_dtype)[None]
    vh = values.to(compute_dtype)[None]
    if past == 0:
        out = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, enable_gqa=True)
    else:
        query_pos = torch.arange(past, past + num_tokens, device=q.device)
        key_pos = torch.arange(past + num_tokens, device=q.device)
        mask = key_pos[None, :] <= query_pos[:, None]
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, enable_gqa=True)
    return out[0].transpose(0, 1).to(q.dtype)


def _attend_batched(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    group: BatchedQueries, compute_dtype: torch.dtype) -> torch.Tensor:
    """All short sequences at once -> [seqs, max_queries, heads, head_dim]."""
    num_seqs, max_queries = group.token_index.shape
    num_heads, head_dim = q.shape[1], q.shape[2]
    num_kv_heads = k_cache.shape[0]
    per_kv = num_heads // num_kv_heads
    # Query heads sharing a KV head become extra query rows: [B, KV, per_kv * Q, D].
    rows = q.unsqueeze(1) if max_queries == 1 else q[group.token_index]
    qb = rows.view(num_seqs, max_queries, num_kv_heads, per_kv, head_dim)
    qb = qb.permute(0, 2, 3, 1, 4).reshape(num_seqs, num_kv_heads, per_kv * max_queries, head_dim)
    # [KV, B, L, D] seen as [B, KV, L, D]: SDPA takes the strides as they are.
    rows = block_rows(group.block_tables, k_cache)
    keys = gather_blocks(k_cache, rows).to(compute_dtype).transpose(0, 1)
    values = gather_blocks(v_cache, rows).to(compute_dtype).transpose(0, 1)
    mask = group.key_mask
    if max_queries > 1 and per_kv > 1:
        length = mask.shape[-1]
        mask = mask.unsqueeze(2).expand(num_seqs, 1, per_kv, max_queries, length)
        mask = mask.reshape(num_seqs, 1, per_kv * max_queries, length)
    out = F.scaled_dot_product_attention(qb.to(compute_dtype), keys, values, attn_mask=mask)
    out = out.view(num_seqs, num_kv_heads, per_kv, max_queries, head_dim).permute(0, 3, 1, 2, 4)
    return out.reshape(num_seqs, max_queries, num_heads, head_dim).to(q.dtype)
