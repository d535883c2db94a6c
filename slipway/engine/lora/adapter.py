"""Reading a PEFT LoRA folder, checking it fits the base model, and fitting it onto our fused layers.

A PEFT folder holds `adapter_config.json` (r, lora_alpha, use_rslora, target_modules, ...) and
`adapter_model.safetensors` with an A [r, in] and a B [out, r] per adapted module:

    base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight   [r, hidden]
    base_model.model.model.layers.3.self_attn.q_proj.lora_B.weight   [q_size, r]

The model fuses q/k/v into `qkv_proj` and gate/up into `gate_up_proj`, so PEFT's modules are
output slices of our layers:

    qkv_proj      rows [0, q) q_proj  | [q, q + kv) k_proj | [q + kv, q + 2 kv) v_proj
    gate_up_proj  rows [0, inter) gate_proj | [inter, 2 inter) up_proj
    o_proj, down_proj   the whole layer

Per fused layer an adapter becomes one pair (`FusedLora`): A, its parts' A stacked [R, in]
(R = r times the parts it adapts), and B [R, out], each part's `scaling * B^T` in its own rows
and output columns and zeros elsewhere (block-diagonal), so that delta(x) = (x A^T) B covers the
whole fused output in two products. scaling = lora_alpha / r, or lora_alpha / sqrt(r) with
use_rslora.

`inspect_adapter` reads only the config and the tensors' shapes (registering is cheap);
`load_fused_weights` reads the tensors when the adapter is first used.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import safe_open

from slipway.engine.errors import EngineRequestError
from slipway.engine.models.config import ModelConfig

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
SUPPORTED_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FUSED_MODULES = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "o_proj": ("o_proj",),
                 "gate_up_proj": ("gate_proj", "up_proj"), "down_proj": ("down_proj",)}
"""Our layers and the PEFT modules each one fuses, in output order."""

_KEY = re.compile(r"^(?:base_model\.model\.)?(?:model\.)?layers\.(\d+)\.(?:self_attn|mlp)\.(\w+?)\.lora_([AB])"
                  r"(?:\.[\w-]+)?\.weight$")
# PEFT options that change what the weights mean; a folder using one is refused rather than misread.
_UNSUPPORTED_OPTIONS = {
    "use_dora": "DoRA (use_dora)", "lora_bias": "trained LoRA biases (lora_bias)",
    "modules_to_save": "fully trained modules (modules_to_save)", "layer_replication": "layer_replication",
    "trainable_token_indices": "trainable_token_indices", "target_parameters": "target_parameters",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens)", "use_qalora": "QA-LoRA (use_qalora)",
    "fan_in_fan_out": "fan_in_fan_out", "rank_pattern": "per-module ranks (rank_pattern)",
    "alpha_pattern": "per-module alphas (alpha_pattern)",
}


class LoraAdapterError(EngineRequestError):
    """A folder that is not a LoRA adapter this engine can serve on its base model; the message
    names the file and what to change."""

    code = "invalid_lora_adapter"


@dataclass(frozen=True)
class LoraAdapter:
    """A registered adapter: what `inspect_adapter` found. Equal adapters share loaded weights."""

    name: str
    folder: Path
    rank: int
    scaling: float
    """lora_alpha / r (lora_alpha / sqrt(r) with use_rslora): the factor on B @ A."""
    targets: tuple[str, ...]
    """The PEFT modules it adapts, in SUPPORTED_TARGETS order."""
    root_hash: int
    """The parent hash of its sequences' first KV block: prefix caching never shares blocks
    between adapters, or between an adapter and the base (whose chains start at 0)."""


class FusedLora(NamedTuple):
    """One adapter on one of our layers: delta(x) = (x @ a.T) @ b."""

    a: torch.Tensor
    """[R, in]: the A of each adapted part, stacked in output order."""
    b: torch.Tensor
    """[R, out]: scaling * B^T of each part in its rows and output columns, zeros elsewhere."""


def part_slices(config: ModelConfig) -> dict[str, tuple[str, int, int]]:
    """PEFT module -> (our layer, first output row, rows)."""
    q_size, kv_size = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    inter, hidden = config.intermediate_size, config.hidden_size
    return {
        "q_proj": ("qkv_proj", 0, q_size), "k_proj": ("qkv_proj", q_size, kv_size),
        "v_proj": ("qkv_proj", q_size + kv_size, kv_size), "o_proj": ("o_proj", 0, hidden),
        "gate_proj": ("gate_up_proj", 0, inter), "up_proj": ("gate_up_proj", inter, inter),
        "down_proj": ("down_proj", 0, hidden),
    }


def in_features(config: ModelConfig, module: str) -> int:
    """Input width of a PEFT module (and of the layer that fuses it)."""
    if module == "o_proj":
        return config.num_heads * config.head_dim
    if module == "down_proj":
        return config.intermediate_size
    return config.hidden_size


def inspect_adapter(name: str, folder: str | Path, config: ModelConfig, *, max_lora_rank: int | None) -> LoraAdapter:
    """Read `folder`'s config and tensor shapes and check they fit a model of `config`;
    raise `LoraAdapterError` naming the file and the fix otherwise."""
    folder = Path(folder).expanduser().resolve()
    settings = _read_config(folder)
    rank, alpha = settings["r"], settings["lora_alpha"]
    if max_lora_rank is not None and rank > max_lora_rank:
        raise LoraAdapterError(
            f"{folder / CONFIG_FILE}: rank r={rank} exceeds max_lora_rank={max_lora_rank}; raise max_lora_rank "
            f"(SLIPWAY_LLM_MAX_LORA_RANK on a replica) to at least {rank}, or train the adapter with a smaller r"
        )
    weights = folder / WEIGHTS_FILE
    targets: set[str] = set()
    with _open(weights) as tensors:
        keys = set(tensors.keys())
        for key in sorted(keys):
            _, module, _ = _parse_key(weights, key, config)
            targets.add(module)
            _check_shape(weights, key, tuple(tensors.get_slice(key).get_shape()), config, rank)
            pair = re.sub(r"lora_([AB])", lambda m: "lora_" + ("B" if m.group(1) == "A" else "A"), key, count=1)
            if pair not in keys:
                raise LoraAdapterError(f"{weights}: {key} has no matching {pair}; the file is incomplete, save the "
                                       "adapter again")
    if not targets:
        raise LoraAdapterError(f"{weights}: holds no LoRA tensors (lora_A / lora_B); save the adapter again with "
                               "PEFT's save_pretrained")
    scaling = alpha / math.sqrt(rank) if settings.get("use_rslora") else alpha / rank
    return LoraAdapter(name, folder, rank, float(scaling), tuple(t for t in SUPPORTED_TARGETS if t in targets),
                       _root_hash(name, weights))


def load_fused_weights(adapter: LoraAdapter, config: ModelConfig, *, dtype: torch.dtype,
                       device: torch.device | str) -> dict[tuple[int, str], FusedLora]:
    """The adapter's tensors as (layer index, our layer name) -> `FusedLora`, in `dtype` on `device`.

    Products and scaling are done in float32 before the cast. Raises `LoraAdapterError` if the
    file no longer matches what `inspect_adapter` found (it changed on disk since).
    """
    weights = adapter.folder / WEIGHTS_FILE
    slices = part_slices(config)
    parts: dict[tuple[int, str], dict[str, dict[str, torch.Tensor]]] = {}
    with _open(weights) as tensors:
        for key in tensors.keys():
            layer, module, which = _parse_key(weights, key, config)
            tensor = tensors.get_tensor(key)
            _check_shape(weights, key, tuple(tensor.shape), config, adapter.rank)
            parts.setdefault((layer, slices[module][0]), {}).setdefault(module, {})[which] = tensor.float()
    fused: dict[tuple[int, str], FusedLora] = {}
    for (layer, layer_name), by_module in parts.items():
        first_row = slices[FUSED_MODULES[layer_name][0]][1]
        out_size = sum(slices[m][2] for m in FUSED_MODULES[layer_name])
        a_parts, b_parts = [], []
        for module in FUSED_MODULES[layer_name]:
            pair = by_module.get(module)
            if pair is None:
                continue
            if "A" not in pair or "B" not in pair:
                raise LoraAdapterError(f"{weights}: layer {layer} {module} lacks lora_A or lora_B; save the "
                                       "adapter again")
            _, row, size = slices[module]
            b = torch.zeros(pair["A"].shape[0], out_size)
            b[:, row - first_row: row - first_row + size] = adapter.scaling * pair["B"].t()
            a_parts.append(pair["A"])
            b_parts.append(b)
        fused[(layer, layer_name)] = FusedLora(torch.cat(a_parts).to(device=device, dtype=dtype).contiguous(),
                                               torch.cat(b_parts).to(device=device, dtype=dtype).contiguous())
    return fused


# -- internals -------------------------------------------------------------------------------


def _read_config(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise LoraAdapterError(f"{folder}: no such folder; point at a PEFT LoRA adapter folder (the one "
                               f"save_pretrained wrote, holding {CONFIG_FILE} and {WEIGHTS_FILE})")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise LoraAdapterError(f"{folder}: {CONFIG_FILE} is missing, so this is not a PEFT adapter folder; save the "
                               "adapter with PEFT's model.save_pretrained(folder)")
    if not (folder / WEIGHTS_FILE).is_file():
        found = " (it has adapter_model.bin: save it again with safe_serialization=True)" \
            if (folder / "adapter_model.bin").is_file() else ""
        raise LoraAdapterError(f"{folder}: {WEIGHTS_FILE} is missing{found}; the engine reads safetensors only")
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LoraAdapterError(f"{path}: not readable JSON ({exc}); save the adapter again") from None
    if not isinstance(settings, dict):
        raise LoraAdapterError(f"{path}: expected a JSON object of PEFT settings; save the adapter again")
    peft_type = settings.get("peft_type", "LORA")
    if peft_type != "LORA":
        raise LoraAdapterError(f"{path}: peft_type is {peft_type!r}; the engine serves LoRA adapters only")
    rank, alpha = settings.get("r"), settings.setdefault("lora_alpha", 8)  # PEFT's default alpha
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise LoraAdapterError(f"{path}: r must be a positive integer, got {rank!r}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise LoraAdapterError(f"{path}: lora_alpha must be a number, got {alpha!r}")
    for option, what in _UNSUPPORTED_OPTIONS.items():
        if settings.get(option):
            raise LoraAdapterError(f"{path}: the adapter uses {what}, which the builtin engine does not serve; "
                                   f"train it without {option}, or serve it with engine: vllm")
    if settings.get("bias", "none") != "none":
        raise LoraAdapterError(f"{path}: bias is {settings['bias']!r}: the adapter trained bias terms, which the "
                               "builtin engine does not serve; train it with bias='none'")
    return settings


def _open(path: Path) -> Any:
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises several kinds for a bad file
        raise LoraAdapterError(f"{path}: not a readable safetensors file ({exc}); save the adapter again") from None


def _parse_key(path: Path, key: str, config: ModelConfig) -> tuple[int, str, str]:
    """(layer index, PEFT module, "A" or "B") of a tensor name; an error for anything else."""
    match = _KEY.match(key)
    if match is None:
        raise LoraAdapterError(
            f"{path}: tensor {key!r} is not a LoRA A/B of a decoder layer's projection; the builtin engine serves "
            f"adapters whose target_modules are among {', '.join(SUPPORTED_TARGETS)}: retrain with those"
        )
    layer, module, which = int(match.group(1)), match.group(2), match.group(3)
    if module not in SUPPORTED_TARGETS:
        raise LoraAdapterError(f"{path}: adapts {module!r}, which the builtin engine does not serve; target_modules "
                               f"must be among {', '.join(SUPPORTED_TARGETS)}")
    if layer >= config.num_layers:
        raise LoraAdapterError(f"{path}: adapts layer {layer}, but the base model has {config.num_layers} layers; "
                               "was this adapter trained on another base model?")
    return layer, module, which


def _check_shape(path: Path, key: str, shape: tuple[int, ...], config: ModelConfig, rank: int) -> None:
    _, module, which = _parse_key(path, key, config)
    expected = (rank, in_features(config, module)) if which == "A" else (part_slices(config)[module][2], rank)
    if shape != expected:
        raise LoraAdapterError(
            f"{path}: {key} has shape {list(shape)}, the base model and r={rank} imply {list(expected)}; the adapter "
            "was trained on another base model (hidden sizes differ) or with per-module ranks"
        )


def _root_hash(name: str, weights: Path) -> int:
    """A 128-bit seed from the adapter's name and its weights file (path, size, modification
    time), so re-registering a name with other weights never meets the old cached blocks."""
    stat = weights.stat()
    identity = f"slipway-lora\0{name}\0{weights}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
    return int.from_bytes(hashlib.blake2b(identity, digest_size=16).digest(), "little")
