"""The CPU attention kernel against the PyTorch path it replaces, and its build and fallbacks."""

from __future__ import annotations

import itertools
import shutil

import pytest
import torch

from slipway.engine.models import cpu_attention
from slipway.engine.models.attention import AttentionMetadata, BatchedQueries, paged_attention
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
    built = list(tmp_path.glob("cpu_attention-*.so"))
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
    monkeypatch.setattr(cpu_attention, "SOURCE", broken)
    assert load_kernel(tmp_path / "kernels") is None
    assert "building the CPU attention kernel failed" in caplog.text
    assert not list((tmp_path / "kernels").glob("*"))


def test_the_runner_uses_the_kernel_only_for_a_cache_it_supports(kernel: PagedAttentionKernel) -> None:
    assert kernel.supports(torch.zeros(2, 4, 16, 64, dtype=torch.bfloat16))
    assert kernel.supports(torch.zeros(2, 4, 16, 64))
    assert not kernel.supports(torch.zeros(2, 4, 16, 64, dtype=torch.float16))
