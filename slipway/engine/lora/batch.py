"""`LoraBatch`: one step's LoRA products, added to the base layers' outputs row by row.

The runner describes the step as spans of the flat batch, one per sequence that has an adapter:
(first row, rows, slot). Rows outside every span are base rows and get nothing added. Each
adapted layer then computes `y = base(x)` as usual and calls `apply`, which adds, for every
adapted row, (x_row A^T) B of that row's adapter. Two ways, chosen once per step:

    grouped   per run of consecutive rows with one adapter: y[run] += (x[run] A_k^T) B_k, two
              small products per run, exact work. Prefill chunks (one long span each) always
              go this way, and so do the decode rows when they all share one adapter.
    stacked   for the short spans (decodes, drafts) when they form several runs: every row
              times every loaded adapter at once, s = (x A_all^T) * mask (each row keeps its
              own adapter's columns), y += s B_all: two products whatever the number of
              adapters (with oneDNN, the mask and the add fuse into them), at the price of
              multiplying by the adapters a row does not use.

    flat rows:   [ prefill span (slot 2) | base prefill | decodes, base first, then by slot ]
                   └ grouped run ┘                      └ stacked region: rows x all adapters ┘

Measured on CPU (benchmarks/lora.py --kernels: SmolLM2-135M, bfloat16, 8 rank-16 adapters on
all 7 projections loaded, one thread; one step's products over 30 layers): decode rows 1-16 in
one run take 7-10 ms grouped, 13-20 ms stacked; in 2 runs both take 13-20 ms (stacked is cheaper
when fewer adapters are loaded); in 4 or 8 runs 30-66 ms grouped, 13-20 ms stacked. A prefill
chunk of 256 rows of one adapter takes 29 ms grouped, 169 ms stacked. The base layers are
untouched: a step with no adapted row builds no `LoraBatch`, and the model skips every LoRA call.
"""

from __future__ import annotations

from typing import Sequence

import torch

from slipway.engine.lora.stack import LayerStack, LoraStack

MAX_GROUPED_RUNS = 1
"""Short spans forming at most this many runs of one adapter are computed grouped."""
MAX_STACKED_SPAN = 16
"""Spans longer than this (prefill chunks) are always computed grouped."""

Span = tuple[int, int, int]
"""(first row in the flat batch, number of rows, slot of the adapter)."""


class LoraBatch:
    """The adapters of one step's rows; see the module docstring."""

    def __init__(self, stack: LoraStack, spans: Sequence[Span], *, max_grouped_runs: int | None = None) -> None:
        """`max_grouped_runs`: MAX_GROUPED_RUNS when None."""
        self.stack = stack
        self.grouped: list[tuple[int, int, int]] = []
        """(first row, end row, slot) of each run computed grouped."""
        self.region: tuple[int, int] | None = None
        """(first row, end row) computed stacked, or None."""
        self._row_slots: torch.Tensor | None = None
        self._masks: dict[int, torch.Tensor] = {}
        short: list[tuple[int, int, int]] = []
        for start, length, slot in sorted(spans):
            if length > MAX_STACKED_SPAN:
                self.grouped.append((start, start + length, slot))
            elif short and short[-1][1] == start and short[-1][2] == slot:
                short[-1] = (short[-1][0], start + length, slot)
            else:
                short.append((start, start + length, slot))
        if len(short) <= (MAX_GROUPED_RUNS if max_grouped_runs is None else max_grouped_runs):
            self.grouped += short
            return
        begin, end = short[0][0], short[-1][1]
        row_slots = [-1] * (end - begin)  # rows of no short span (base, or a grouped span) keep -1
        for start, stop, slot in short:
            row_slots[start - begin:stop - begin] = [slot] * (stop - start)
        device = next(iter(stack.layers.values())).a.device
        self.region = (begin, end)
        self._row_slots = torch.tensor(row_slots, dtype=torch.long, device=device)

    def layer(self, index: int) -> "LayerLora | None":
        """The LoRA calls of decoder layer `index`; None when no loaded adapter adapts it."""
        layers = self.stack.by_layer.get(index)
        return LayerLora(self, layers) if layers else None

    def apply(self, layer: LayerStack, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """`y` (the base layer's output for `x`) plus each adapted row's delta; may reuse `y`."""
        for start, end, slot in self.grouped:
            rows = layer.rows.get(slot)
            if rows is not None:
                a, b = layer.a[rows[0]:rows[1]], layer.b[rows[0]:rows[1]]
                y[start:end].addmm_(x[start:end] @ a.t(), b)
        if self.region is not None:
            y = self._apply_stacked(layer, x, y)
        return y

    def _apply_stacked(self, layer: LayerStack, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert self.region is not None
        begin, end = self.region
        mask = self._mask(layer.owner, y.dtype)
        rows = x[begin:end]
        if layer.packed_a is None:
            shrunk = rows @ layer.a.t()
            shrunk.mul_(mask)
            y[begin:end].addmm_(shrunk, layer.b)
            return y
        # oneDNN fuses the mask into the first product and the add into the second.
        shrunk = torch.ops.mkldnn._linear_pointwise.binary(rows, mask, layer.packed_a, None, "mul")
        if begin == 0 and end == y.shape[0]:
            return torch.ops.mkldnn._linear_pointwise.binary(shrunk, y, layer.packed_bt, None, "add")
        y[begin:end] += torch.ops.mkldnn._linear_pointwise(shrunk, layer.packed_bt, None, "none", [], "")
        return y

    def _mask(self, owner: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[region rows, C]: 1 where the column belongs to the row's adapter. Layers with the same
        layout share `owner`, so this is built once per layout per step."""
        mask = self._masks.get(id(owner))
        if mask is None:
            assert self._row_slots is not None
            mask = self._masks[id(owner)] = (owner[None, :] == self._row_slots[:, None]).to(dtype)
        return mask


class LayerLora:
    """One decoder layer's view of a `LoraBatch`: what the model code calls."""

    def __init__(self, batch: LoraBatch, layers: dict[str, LayerStack]) -> None:
        self.batch = batch
        self.layers = layers

    def apply(self, name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """`y` = the fused layer `name`'s base output for `x`, plus the rows' adapter deltas."""
        layer = self.layers.get(name)
        return y if layer is None else self.batch.apply(layer, x, y)
