"""`merge_lora`: fold an adapter into the base weights, for a deployment that serves only it.

W += scaling * B @ A on every adapted projection (the fused layers' output slices), computed in
float32 and rounded once into the weights' dtype. The merged model then runs exactly the base
path: no per-request LoRA work at all. Merge before the linear layers are packed for oneDNN or
compiled (the engine's builder does, for `EngineConfig.merge_adapter`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from slipway.engine.lora.adapter import LoraAdapter, LoraAdapterError, inspect_adapter, load_fused_weights
from slipway.engine.models.llama import LlamaForCausalLM


@torch.no_grad()
def merge_lora(model: LlamaForCausalLM, adapter_folder: str | Path) -> LoraAdapter:
    """Add the adapter in `adapter_folder` to `model`'s weights in place; returns what was read.
    Raises `LoraAdapterError` if it does not fit the model, or the layers are already packed."""
    folder = Path(adapter_folder)
    adapter = inspect_adapter(folder.name, folder, model.config, max_lora_rank=None)
    for (index, name), pair in load_fused_weights(adapter, model.config, dtype=torch.float32, device="cpu").items():
        layer = model.layers[index]
        linear = getattr(layer.self_attn if name in ("qkv_proj", "o_proj") else layer.mlp, name)
        if not isinstance(linear, nn.Linear):
            raise LoraAdapterError(f"{folder}: layer {index} {name} is a {type(linear).__name__}, not a plain "
                                   "linear layer; merge adapters before packing or compiling the model")
        weight = linear.weight
        merged = weight.float() + (pair.b.t() @ pair.a).to(weight.device)
        weight.copy_(merged.to(weight.dtype))
    return adapter
