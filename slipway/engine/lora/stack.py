"""`LoraStack`: the weights of the loaded adapters, stacked per layer for batched products.

For every (decoder layer, fused layer) some loaded adapter adapts, the adapters' `FusedLora`
pairs are concatenated in slot order into one `LayerStack`:

    a      [C, in]    rows of slot 0's A | slot 2's A | ...      (C = the adapters' R summed)
    b      [C, out]   the matching rows of their block-diagonal, scaled B
    owner  [C]        the slot each row belongs to
    rows   slot -> (first row, end row)

Any row of the step can then be multiplied by all loaded adapters in two products, keeping
only its own adapter's columns (see batch.py). With `pack` (bfloat16 on CPU) `a` and `b` are
also laid out once for oneDNN, like the base model's `PackedLinear`: re-blocking a plain weight
costs as much as the product for the few rows of a decode step.

A stack is immutable; the adapter table builds a new one when the loaded set changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from slipway.engine.lora.adapter import FusedLora


@dataclass(frozen=True)
class LayerStack:
    """One fused layer's loaded adapters, stacked; see the module docstring."""

    a: torch.Tensor
    b: torch.Tensor
    owner: torch.Tensor
    rows: Mapping[int, tuple[int, int]]
    packed_a: torch.Tensor | None = None
    """`a` in oneDNN's layout (for torch.ops.mkldnn._linear_pointwise), or None."""
    packed_bt: torch.Tensor | None = None
    """`b` transposed, in oneDNN's layout, or None."""


class LoraStack:
    """Every loaded adapter's weights by (layer index, fused layer name); see the module docstring."""

    def __init__(self, layers: dict[tuple[int, str], LayerStack], slots: frozenset[int]) -> None:
        self.layers = layers
        self.slots = slots
        """The slots that hold an adapter."""
        self.by_layer: dict[int, dict[str, LayerStack]] = {}
        """Decoder layer index -> fused layer name -> its stack (layers no adapter adapts are absent)."""
        for (index, name), layer in layers.items():
            self.by_layer.setdefault(index, {})[name] = layer

    @classmethod
    def build(cls, adapters: Mapping[int, Mapping[tuple[int, str], FusedLora]], *, pack: bool) -> "LoraStack":
        """Stack `adapters` (slot -> its fused weights) in slot order."""
        keys = sorted({key for weights in adapters.values() for key in weights})
        # Layers with the same owner layout share one owner tensor, so a step builds one row mask
        # per layout rather than one per layer.
        owners: dict[tuple[tuple[int, int], ...], torch.Tensor] = {}
        layers = {}
        for key in keys:
            a_parts, b_parts, rows = [], [], {}
            start = 0
            for slot in sorted(adapters):
                pair = adapters[slot].get(key)
                if pair is None:
                    continue
                a_parts.append(pair.a)
                b_parts.append(pair.b)
                rows[slot] = (start, start + pair.a.shape[0])
                start += pair.a.shape[0]
            a, b = torch.cat(a_parts), torch.cat(b_parts)
            layout = tuple((slot, end - begin) for slot, (begin, end) in rows.items())
            owner = owners.get(layout)
            if owner is None:
                owner = owners[layout] = torch.cat([torch.full((size,), slot, dtype=torch.long, device=a.device)
                                                    for slot, size in layout])
            packed_a = packed_bt = None
            if pack:
                packed_a = torch.ops.mkldnn._reorder_linear_weight(a)
                packed_bt = torch.ops.mkldnn._reorder_linear_weight(b.t().contiguous())
            layers[key] = LayerStack(a, b, owner, rows, packed_a, packed_bt)
        return cls(layers, frozenset(adapters))

    def weights_of(self, slot: int) -> dict[tuple[int, str], FusedLora]:
        """The adapter in `slot` as views into this stack (no copy)."""
        weights = {}
        for key, layer in self.layers.items():
            rows = layer.rows.get(slot)
            if rows is not None:
                weights[key] = FusedLora(layer.a[rows[0]:rows[1]], layer.b[rows[0]:rows[1]])
        return weights
