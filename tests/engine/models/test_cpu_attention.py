"""The CPU attention kernel against the PyTorch path it replaces, and its build and fallbacks."""

from __future__ import annotations

import itertools
import shutil

import pytest
import torch

from slipway.engine.models import cpu_attention
from slipway.engine.models.attention import AttentionMetadata, BatchedQueries, PrefillSpan, paged_attention
from slipway.engine.models.cpu_attention import PagedAttentionKernel, load_kernel

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None,
                                reason="no C compiler on this machine to build the kernel")


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> PagedAttentionKernel:
    built = load_kernel(tmp_path_factory.mktemp("kernels"))
    assert built is not None, "the kernel should build where a C compiler exists"
    return built


def batched_group(query_counts: list[int], context_lens: list[int], num_blocks: int, block_size: int,
                  generator: torch.Generator) -> BatchedQueries:
    """The metadata the runner builds for sequences with these queries and contexts, their blocks
    scattered through the cache."""
    max_queries = max(query_counts)
    max_blocks = max(-(-length // block_size) for length in context_lens)
    permutation = torch.randperm(num_blocks, generator=generator).tolist()
    tables, token_index, query_pos = [], [], []
    offset = 0
    for count, length in zip(query_counts, context_lens):
        used = [permutation.pop() for _ in range(-(-length // block_size))]
        tables.append(used + [0] * (max_blocks - len(used)))
        token_index.append([offset + q if q < count else 0 for q in range(max_queries)])
        query_pos.append([length - count + q if q < count else 0 for q in range(max_queries)])
        offset += count
    counts = torch.tensor(query_counts)
    key_pos = torch.arange(max_blocks * block_size)
    return BatchedQueries(
        start=0,
        token_index=torch.tensor(token_index),
        query_valid=torch.arange(max_queries)[None, :] < counts[:, None],
        block_tables=torch.tensor(tables),
        key_mask=(key_pos[None, None, :] <= torch.tensor(query_pos)[:, :, None]).unsqueeze(1),
        query_starts=torch.tensor([0, *itertools.accumulate(query_counts)]),
        context_lens=torch.tensor(context_lens),
    )


def attend(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, group: BatchedQueries,
           kernel: PagedAttentionKernel | None) -> torch.Tensor:
    """paged_attention for a batch that is only the group; the step's own keys were written before."""
    num_tokens = q.shape[0]
    no_new = torch.empty(0, k_cache.shape[0], k_cache.shape[3], dtype=k_cache.dtype)
    meta = AttentionMetadata(slot_mapping=torch.empty(0, dtype=torch.long), prefills=[], batched=group,
                             kernel=kernel)
    out = paged_attention(q, no_new, no_new, k_cache, v_cache, meta, q.dtype)
    assert out.shape == (num_tokens, q.shape[1], q.shape[2])
    return out


CASES = [
    # (dtype, heads, kv_heads, head_dim, block_size, query counts, context lengths)
    (torch.bfloat16, 9, 3, 64, 16, [1] * 6, [1, 15, 16, 17, 300, 911]),  # SmolLM2's shape, decodes
    (torch.bfloat16, 8, 2, 128, 16, [1, 5, 3], [40, 129, 7]),  # decodes beside speculative drafts
    (torch.bfloat16, 4, 4, 32, 8, [2, 1], [33, 64]),  # no grouping, small blocks
    (torch.bfloat16, 10, 2, 64, 32, [1, 4], [100, 65]),  # a group size with no specialised copy
    (torch.bfloat16, 6, 2, 48, 16, [1, 2], [70, 18]),  # head_dim not a multiple of 32: portable code
    (torch.float32, 9, 3, 64, 16, [1, 1, 3], [1, 500, 77]),
    (torch.float32, 4, 1, 16, 4, [4], [9]),
]


@pytest.mark.parametrize("dtype, heads, kv_heads, head_dim, block_size, counts, lengths", CASES)
def test_the_kernel_matches_the_pytorch_path(kernel: PagedAttentionKernel, dtype: torch.dtype, heads: int,
                                             kv_heads: int, head_dim: int, block_size: int, counts: list[int],
                                             lengths: list[int]) -> None:
    generator = torch.Generator().manual_seed(heads * 1000 + head_dim)
    num_blocks = sum(-(-n // block_size) for n in lengths) + 5
    shape = (kv_heads, num_blocks, block_size, head_dim)
    k_cache = torch.randn(shape, generator=generator).to(dtype)
    v_cache = torch.randn(shape, generator=generator).to(dtype)
    q = (torch.randn(sum(counts), heads, head_dim, generator=generator) * 2).to(dtype)
    group = batched_group(counts, lengths, num_blocks, block_size, generator)

    expected = attend(q, k_cache, v_cache, group, kernel=None).float()
    actual = attend(q, k_cache, v_cache, group, kernel=kernel).float()

    # bfloat16 outputs differ by at most a rounding or two of the output (SDPA rounds
    # intermediate probabilities to bfloat16; the kernel keeps them in float32).
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(actual, expected, atol=tolerance, rtol=tolerance)


def test_a_query_attends_only_to_keys_up_to_its_own_position(kernel: PagedAttentionKernel) -> None:
    """Keys after a query's position, or past its context, must not move its output."""
    generator = torch.Generator().manual_seed(7)
    k_cache = torch.randn(1, 8, 4, 32, generator=generator)
    v_cache = torch.randn(1, 8, 4, 32, generator=generator)
    q = torch.randn(3, 1, 32, generator=generator)
    group = batched_group([3], [10], 8, 4, generator)
    before = attend(q, k_cache, v_cache, group, kernel)
    table = group.block_tables[0]
    k_cache[0, table[2], 2:] = 1e4  # positions 10 and 11: beyond the context of 10
    v_cache[0, table[2], 1] = 1e4  # position 9: seen only by the last query
    after = attend(q, k_cache, v_cache, group, kernel)
    torch.testing.assert_close(after[:2], before[:2])
    assert (after[2] - before[2]).abs().max() > 1


def test_shapes_beyond_the_kernel_fall_back_to_pytorch(kernel: PagedAttentionKernel) -> None:
    generator = torch.Generator().manual_seed(3)
    heads = 17  # 17 query heads on one KV head: more than the kernel's 16 per group
    k_cache = torch.randn(1, 4, 16, 32, generator=generator)
    v_cache = torch.randn(1, 4, 16, 32, generator=generator)
    q = torch.randn(1, heads, 32, generator=generator)
    group = batched_group([1], [20], 4, 16, generator)
    assert kernel(q, k_cache, v_cache, group.block_tables, group.query_starts, group.context_lens) is None
    torch.testing.assert_close(attend(q, k_cache, v_cache, group, kernel),
                               attend(q, k_cache, v_cache, group, None))


def test_the_build_is_cached_per_machine(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_kernel(tmp_path)
    assert first is not None
    built = list(tmp_path.glob("cpu_kernels-*.so"))
    assert len(built) == 1 and first.library == built[0]
    assert not list(tmp_path.glob(".*.tmp")), "no partial build is left behind"
    # A new process finds the file and compiles nothing.
    cpu_attention._loaded.pop(tmp_path)
    monkeypatch.setattr(cpu_attention, "_compile", lambda *args: pytest.fail("compiled again"))
    assert load_kernel(tmp_path).library == first.library


def test_without_a_compiler_attention_stays_on_pytorch(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert load_kernel(tmp_path / "kernels") is None
    assert "no C compiler found" in caplog.text


def test_a_failing_build_falls_back_with_a_warning(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "broken.c"
    broken.write_text("this is not C\n")
    monkeypatch.setattr(cpu_attention, "SOURCES", (broken,))
    assert load_kernel(tmp_path / "kernels") is None
    assert "building the CPU attention kernel failed" in caplog.text
    assert not list((tmp_path / "kernels").glob("*"))


def test_the_runner_uses_the_kernel_only_for_a_cache_it_supports(kernel: PagedAttentionKernel) -> None:
    assert kernel.supports(torch.zeros(2, 4, 16, 64, dtype=torch.bfloat16))
    assert kernel.supports(torch.zeros(2, 4, 16, 64))
    assert not kernel.supports(torch.zeros(2, 4, 16, 64, dtype=torch.float16))


# -- prefill chunks -----------------------------------------------------------------------------

HAS_AVX512_BF16 = "avx512_bf16" in open("/proc/cpuinfo").read()
needs_avx512_bf16 = pytest.mark.skipif(not HAS_AVX512_BF16, reason="the prefill kernel needs AVX-512 BF16; "
                                       "this CPU attends prompt chunks with PyTorch")


def prefill_meta(num_tokens: int, past: int, num_blocks: int, block_size: int, generator: torch.Generator,
                 kernel: PagedAttentionKernel | None) -> AttentionMetadata:
    used = -(-(past + num_tokens) // block_size)
    table = torch.randperm(num_blocks, generator=generator)[:used]
    span = PrefillSpan(start=0, num_tokens=num_tokens, context_len=past + num_tokens, block_table=table)
    return AttentionMetadata(slot_mapping=torch.empty(0, dtype=torch.long), prefills=[span], batched=None,
                             kernel=kernel)


PREFILL_CASES = [
    # (heads, kv_heads, head_dim, block_size, chunk tokens, past)
    (9, 3, 64, 16, 512, 0),  # SmolLM2: a first chunk
    (9, 3, 64, 16, 273, 512),  # a later chunk
    (9, 3, 64, 16, 37, 1001),  # a short chunk after a long past (prefix-cache hit)
    (8, 2, 128, 16, 70, 33),
    (14, 2, 64, 8, 19, 5),  # seven query heads per KV head: one token per tile
    (4, 4, 32, 32, 45, 0),
    (2, 1, 64, 16, 2, 3),
]


@needs_avx512_bf16
@pytest.mark.parametrize("heads, kv_heads, head_dim, block_size, num_tokens, past", PREFILL_CASES)
def test_the_prefill_kernel_matches_the_pytorch_path(kernel: PagedAttentionKernel, heads: int, kv_heads: int,
                                                     head_dim: int, block_size: int, num_tokens: int,
                                                     past: int) -> None:
    generator = torch.Generator().manual_seed(num_tokens * 7 + past)
    num_blocks = -(-(past + num_tokens) // block_size) + 6
    shape = (kv_heads, num_blocks, block_size, head_dim)
    k_cache = torch.randn(shape, generator=generator).to(torch.bfloat16)
    v_cache = torch.randn(shape, generator=generator).to(torch.bfloat16)
    q = (torch.randn(num_tokens, heads, head_dim, generator=generator) * 2).to(torch.bfloat16)
    k_new = torch.empty(num_tokens, kv_heads, head_dim, dtype=torch.bfloat16)
    v_new = torch.empty_like(k_new)
    meta = prefill_meta(num_tokens, past, num_blocks, block_size, generator, kernel)
    table, size = meta.prefills[0].block_table, block_size
    # The step's own keys and values are those the cache holds at their positions.
    for i, position in enumerate(range(past, past + num_tokens)):
        k_new[i] = k_cache[:, table[position // size], position % size]
        v_new[i] = v_cache[:, table[position // size], position % size]
    meta.slot_mapping = torch.tensor([int(table[p // size]) * size + p % size for p in range(past, past + num_tokens)])

    assert kernel.prefill(q, k_cache, v_cache, table, past) is not None, "the kernel takes this shape"
    actual = paged_attention(q, k_new, v_new, k_cache, v_cache, meta, torch.bfloat16).float()
    meta.kernel = None
    expected = paged_attention(q, k_new, v_new, k_cache, v_cache, meta, torch.bfloat16).float()
    # Both round probabilities to bfloat16 before the value product; they differ in the order of sums.
    torch.testing.assert_close(actual, expected, atol=3e-2, rtol=3e-2)


@needs_avx512_bf16
def test_a_prefill_query_sees_no_key_after_its_position(kernel: PagedAttentionKernel) -> None:
    generator = torch.Generator().manual_seed(11)
    k_cache = torch.randn(1, 8, 16, 64, generator=generator).to(torch.bfloat16)
    v_cache = torch.randn(1, 8, 16, 64, generator=generator).to(torch.bfloat16)
    q = torch.randn(20, 2, 64, generator=generator).to(torch.bfloat16)
    table = torch.tensor([3, 1, 6])
    before = kernel.prefill(q, k_cache, v_cache, table, past=10)
    v_cache[0, 1, 13] = 1e3  # position 29: seen by the chunk's last token only
    k_cache[0, 1, 14:] = 50.0  # positions 30 and 31, and 32..47 below: beyond the context of 30
    k_cache[0, 6] = 50.0
    after = kernel.prefill(q, k_cache, v_cache, table, past=10)
    torch.testing.assert_close(after[:19], before[:19])
    assert (after[19] - before[19]).abs().max() > 1


def test_prefill_shapes_the_kernel_does_not_take_fall_back(kernel: PagedAttentionKernel) -> None:
    table = torch.tensor([0, 1])
    cache = torch.zeros(1, 2, 16, 48, dtype=torch.bfloat16)  # head_dim 48: not a multiple of 32
    assert kernel.prefill(torch.zeros(3, 2, 48, dtype=torch.bfloat16), cache, cache, table, past=1) is None
    many = torch.zeros(1, 2, 16, 64, dtype=torch.bfloat16)  # 13 query heads on one KV head
    assert kernel.prefill(torch.zeros(3, 13, 64, dtype=torch.bfloat16), many, many, table, past=1) is None
    fp32 = torch.zeros(1, 2, 16, 64)
    assert kernel.prefill(torch.zeros(3, 2, 64), fp32, fp32, table, past=1) is None
