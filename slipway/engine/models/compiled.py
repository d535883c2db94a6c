"""The decode step compiled with `torch.compile` (inductor): one graph for every batch size.

Pure-decode steps (one new token per sequence) are most of a busy engine's steps, and on CPU
their eager form spends about as much time dispatching small ops as computing. Compiled, norms,
rotary, attention arithmetic, activations and residuals fuse into a few kernels per layer, and
with `freezing` inductor packs the weights once for oneDNN's bfloat16 linear layers.

    runner ── B decodes ──► B == 1: padded to 2 rows ──► compiled graph (B, width dynamic)
                                                          └─ no matching graph: eager decode

Two sizes are dynamic: the batch and the width of the block tables (how much past the longest
sequence has), so neither growing sequences nor a changing batch recompile. Sizes 0 and 1 would
be specialised apart, hence the padding to at least 2 of both. `LlamaForCausalLM.decode` only
reads the cache: writing the step's keys and values inside the graph would make inductor copy
the whole cache every layer; the runner writes them once, after the graph. `warm_up` compiles
when the engine starts; later, a call that would need a new graph runs eagerly instead of
compiling while requests wait.
"""

from __future__ import annotations

import logging
import time

import torch

from slipway.engine.models.llama import LlamaForCausalLM

log = logging.getLogger(__name__)

MIN_BATCH_SIZE = 2
"""Batches are padded to at least this many rows (a batch of 1 would be compiled apart)."""
MIN_BLOCK_TABLE_WIDTH = 2
"""Block tables are padded to at least this width, for the same reason."""


class CompiledDecode:
    """`model.decode` compiled once for all batch sizes; see the module docstring."""

    def __init__(self, model: LlamaForCausalLM, kv_cache: torch.Tensor, compute_dtype: torch.dtype) -> None:
        self.model = model
        self.kv_cache = kv_cache
        self.compute_dtype = compute_dtype
        self.compile_seconds = 0.0
        """Time `warm_up` spent compiling (inductor's on-disk cache makes later starts shorter)."""
        self.num_eager_fallbacks = 0
        """Calls after `warm_up` that matched no compiled graph and ran eagerly (should stay 0)."""
        self._compiled = torch.compile(self._decode, fullgraph=True)
        self._ready = False

    @torch.inference_mode()
    def warm_up(self) -> float:
        """Compile now; returns the seconds it took."""
        import torch._inductor.config as inductor_config  # a second of imports, only when compiling

        started = time.monotonic()
        device = self.kv_cache.device
        # Distinct tensors: the graph is specialised on which inputs alias one another.
        token_ids, positions = (torch.zeros(MIN_BATCH_SIZE, dtype=torch.long, device=device) for _ in range(2))
        block_tables = torch.zeros(MIN_BATCH_SIZE, MIN_BLOCK_TABLE_WIDTH, dtype=torch.long, device=device)
        self._mark_dynamic(token_ids, positions, block_tables)
        # freezing: weights become constants, which lets inductor pre-pack them for oneDNN. It is read
        # as the graph compiles, so it is patched around the first call rather than passed as an option.
        with inductor_config.patch(freezing=True):
            # The cache goes in as an argument: a tensor the graph captured would be frozen as a constant.
            self._compiled(token_ids, positions, block_tables, self.kv_cache)
        self._ready = True
        self.compile_seconds = time.monotonic() - started
        return self.compile_seconds

    def __call__(self, token_ids: torch.Tensor, positions: torch.Tensor,
                 block_tables: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`LlamaForCausalLM.decode` of at least MIN_BATCH_SIZE rows, compiled once warm."""
        if not self._ready:
            raise RuntimeError("CompiledDecode used before warm_up(); call warm_up() when the engine starts")
        # Never compile in the serving path: an input no graph accepts runs eagerly instead.
        try:
            with torch.compiler.set_stance("fail_on_recompile"):
                return self._compiled(token_ids, positions, block_tables, self.kv_cache)
        except RuntimeError as error:
            if "recompile" not in str(error):
                raise
            self.num_eager_fallbacks += 1
            if self.num_eager_fallbacks == 1:
                log.warning("a decode step matched no compiled graph and ran eagerly",
                            extra={"batch_size": token_ids.shape[0], "error": str(error)})
            return self.model.decode(token_ids, positions, block_tables, self.kv_cache, self.compute_dtype)

    @staticmethod
    def _mark_dynamic(token_ids: torch.Tensor, positions: torch.Tensor, block_tables: torch.Tensor) -> None:
        for tensor in (token_ids, positions, block_tables):
            torch._dynamo.mark_dynamic(tensor, 0)
        torch._dynamo.mark_dynamic(block_tables, 1)

    def _decode(self, token_ids: torch.Tensor, positions: torch.Tensor, block_tables: torch.Tensor,
                kv_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.decode(token_ids, positions, block_tables, kv_cache, self.compute_dtype)
