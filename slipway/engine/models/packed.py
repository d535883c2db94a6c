"""Linear layers with their weights laid out once for oneDNN's CPU kernels (eager runs).

A plain bfloat16 `nn.Linear` on CPU hands oneDNN a row-major weight that it re-blocks on every
call; for the few rows of a decode step that costs as much as the product itself. Re-blocked
once at load (`torch.ops.mkldnn._reorder_linear_weight`), the same layers take ~40% less time
for 1 to 16 rows and a little less for whole prompt chunks, with the same results up to
bfloat16 rounding.

    model after load ── pack_linear_layers ──► every nn.Linear (LM head included) a PackedLinear

Only for eager runs: a compiled graph packs its own copy from the plain weights (inductor's
`freezing`), so the engine packs only when it does not compile. A tied LM head gets its own
packed copy; the embedding keeps the plain matrix for its lookups.
"""

from __future__ import annotations

import torch
from torch import nn


def can_pack(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether this build of torch has oneDNN's packed linear for `dtype` on `device`."""
    if device.type != "cpu" or dtype != torch.bfloat16 or not torch.backends.mkldnn.is_available():
        return False
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class PackedLinear(nn.Module):
    """y = x W^T + b, W held in oneDNN's blocked layout; a drop-in for a loaded `nn.Linear`."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach())
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


@torch.no_grad()
def pack_linear_layers(model: nn.Module) -> int:
    """Replace every `nn.Linear` of `model` by a `PackedLinear`, in place; returns how many."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, PackedLinear(child))
                replaced += 1
    return replaced
