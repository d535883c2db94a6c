"""Loading a Hugging Face safetensors folder into our model.

Builds the model without initialising weights (on the meta device), allocates it on the target
device in the chosen dtype, then copies each checkpoint tensor into place: q/k/v into the fused
qkv projection, gate/up into the fused gate_up projection, the LM head from the embeddings when
they are tied. Every parameter must be filled exactly once; a missing tensor is an error that
names it.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open
from torch import nn

from slipway.engine.errors import UnsupportedModelError
from slipway.engine.models.config import ModelConfig
from slipway.engine.models.llama import LlamaForCausalLM

_LAYER_KEY = re.compile(r"^layers\.(\d+)\.(self_attn|mlp)\.(q|k|v|gate|up)_proj\.(weight|bias)$")
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def load_model(folder: str | Path, *, dtype: torch.dtype, device: torch.device | str,
               max_positions: int) -> LlamaForCausalLM:
    """The model of `folder` (config.json + *.safetensors) on `device` in `dtype`, in eval mode."""
    folder = Path(folder)
    config = ModelConfig.from_folder(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UnsupportedModelError(
            f"{folder}: no *.safetensors files; convert the checkpoint with "
            "`model.save_pretrained(dir, safe_serialization=True)`"
        )
    with torch.device("meta"), _without_parameter_init():
        model = LlamaForCausalLM(config, max_positions)
    model = model.to(dtype).to_empty(device=device)  # converted while empty: nothing to copy
    model.rotary.build_table()
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight

    params = dict(model.named_parameters(remove_duplicate=False))
    filled: set[str] = set()
    with torch.no_grad():
        for path in files:
            with safe_open(str(path), framework="pt", device="cpu") as checkpoint:
                for key in checkpoint.keys():
                    _load_tensor(model, config, params, filled, key, checkpoint.get_tensor(key))
    if config.tie_word_embeddings:
        filled.add("lm_head.weight")
    missing = sorted(set(params) - filled)
    if missing:
        raise UnsupportedModelError(
            f"{folder}: checkpoint lacks {len(missing)} tensor(s) the model needs, e.g. {missing[:3]}; "
            "check that the folder holds a complete Llama-family checkpoint"
        )
    return model.eval()


@contextmanager
def _without_parameter_init() -> Iterator[None]:
    """Skip the random init of linear and embedding weights, which the checkpoint overwrites.

    Even on the meta device it is not free: under a device context `normal_` dispatches through
    torch's reference implementations, whose first use imports torch._dynamo (~1.4 s of a cold start).
    """
    saved = nn.Linear.reset_parameters, nn.Embedding.reset_parameters
    nn.Linear.reset_parameters = nn.Embedding.reset_parameters = lambda self: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Linear.reset_parameters, nn.Embedding.reset_parameters = saved


def _load_tensor(model: LlamaForCausalLM, config: ModelConfig, params: dict[str, torch.nn.Parameter],
                 filled: set[str], key: str, tensor: torch.Tensor) -> None:
    name = key.removeprefix("model.")
    if name.endswith(_IGNORED_SUFFIXES):
        return
    if name == "lm_head.weight" and config.tie_word_embeddings:
        return  # the tied head is the embedding matrix, loaded under its own name
    match = _LAYER_KEY.match(name)
    if match is None:
        if name not in params:
            raise UnsupportedModelError(f"checkpoint tensor {key!r} has no place in the model; is this a Llama-family checkpoint?")
        _copy(params[name], tensor, key)
        filled.add(name)
        return
    layer, block, proj, kind = match.groups()
    q_size, kv_size = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    inter = config.intermediate_size
    if block == "self_attn":
        fused, parts = f"layers.{layer}.self_attn.qkv_proj.{kind}", ("q", "k", "v")
        offset, size = {"q": (0, q_size), "k": (q_size, kv_size), "v": (q_size + kv_size, kv_size)}[proj]
    else:
        fused, parts = f"layers.{layer}.mlp.gate_up_proj.{kind}", ("gate", "up")
        offset, size = {"gate": (0, inter), "up": (inter, inter)}[proj]
    if fused not in params:
        raise UnsupportedModelError(f"checkpoint tensor {key!r} has no place in the model (config says no {kind})")
    _copy(params[fused].narrow(0, offset, size), tensor, key)
    # A fused parameter counts as filled once all its parts arrived.
    filled.add(f"{fused}#{proj}")
    if all(f"{fused}#{part}" in filled for part in parts):
        filled.add(fused)


def _copy(target: torch.Tensor, tensor: torch.Tensor, key: str) -> None:
    if tuple(target.shape) != tuple(tensor.shape):
        raise UnsupportedModelError(
            f"checkpoint tensor {key!r} has shape {tuple(tensor.shape)}, the config implies {tuple(target.shape)}; "
            "config.json and the weights disagree"
        )
    target.copy_(tensor)
