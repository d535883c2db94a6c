"""The shape of a Llama-family checkpoint, read from a Hugging Face `config.json`.

Owns the translation from Hugging Face's config keys (old and new spellings: `rope_theta` and
`rope_scaling`, or `rope_parameters`) to one frozen `ModelConfig`, and the refusal, with a
reason, of checkpoints the engine cannot run exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slipway.engine.errors import UnsupportedModelError

# Architecture name -> whether q/k/v projections always carry a bias (Qwen2 does).
SUPPORTED_ARCHITECTURES: dict[str, bool] = {
    "LlamaForCausalLM": False,
    "MistralForCausalLM": False,
    "Qwen2ForCausalLM": True,
}
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class ModelConfig:
    """Everything the model code needs to know about one checkpoint."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    rope_scaling: dict[str, Any] | None = None
    sliding_window: int | None = None
    checkpoint_dtype: str | None = None
    eos_token_ids: tuple[int, ...] = ()
    bos_token_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_queries_per_kv(self) -> int:
        return self.num_heads // self.num_kv_heads

    @classmethod
    def from_folder(cls, folder: str | Path) -> "ModelConfig":
        """Read `config.json` (and `generation_config.json` for extra stop tokens) from `folder`."""
        folder = Path(folder)
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise UnsupportedModelError(
                f"{folder}: no config.json; point weights at a Hugging Face model folder "
                "(config.json and *.safetensors)"
            )
        data = json.loads(config_path.read_text())
        generation_path = folder / "generation_config.json"
        generation = json.loads(generation_path.read_text()) if generation_path.is_file() else {}
        return cls.from_dict(data, generation=generation, source=str(config_path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, generation: dict[str, Any] | None = None,
                  source: str = "config.json") -> "ModelConfig":
        architectures = data.get("architectures") or []
        architecture = next((a for a in architectures if a in SUPPORTED_ARCHITECTURES), None)
        if architecture is None:
            raise UnsupportedModelError(
                f"{source}: architectures {architectures} are not supported by the builtin engine; "
                f"it runs {sorted(SUPPORTED_ARCHITECTURES)} (use engine: vllm for others)"
            )
        if data.get("hidden_act", "silu") != "silu":
            raise UnsupportedModelError(f"{source}: hidden_act {data['hidden_act']!r} is not supported; only silu is")
        num_heads = int(data["num_attention_heads"])
        num_kv_heads = int(data.get("num_key_value_heads") or num_heads)
        if num_heads % num_kv_heads:
            raise UnsupportedModelError(
                f"{source}: num_attention_heads ({num_heads}) is not a multiple of num_key_value_heads ({num_kv_heads})"
            )
        rope_theta, rope_scaling = _rope_settings(data, source)
        always_qkv_bias = SUPPORTED_ARCHITECTURES[architecture]
        attention_bias = bool(data.get("attention_bias", False))
        use_sliding = data.get("use_sliding_window", architecture == "MistralForCausalLM")
        return cls(
            architecture=architecture,
            vocab_size=int(data["vocab_size"]),
            hidden_size=int(data["hidden_size"]),
            intermediate_size=int(data["intermediate_size"]),
            num_layers=int(data["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=int(data.get("head_dim") or data["hidden_size"] // num_heads),
            rms_norm_eps=float(data.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            max_position_embeddings=int(data.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
            qkv_bias=always_qkv_bias or attention_bias,
            o_bias=attention_bias and not always_qkv_bias,
            mlp_bias=bool(data.get("mlp_bias", False)),
            sliding_window=int(data["sliding_window"]) if use_sliding and data.get("sliding_window") else None,
            checkpoint_dtype=data.get("dtype") or data.get("torch_dtype"),
            eos_token_ids=_eos_ids(data, generation or {}),
            bos_token_id=data.get("bos_token_id"),
        )


def _rope_settings(data: dict[str, Any], source: str) -> tuple[float, dict[str, Any] | None]:
    """(theta, scaling or None) from either spelling of the rope keys."""
    params = dict(data.get("rope_parameters") or {})
    legacy = dict(data.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", data.get("rope_theta", 10000.0)))
    scaling = {**legacy, **params}
    scaling.pop("rope_theta", None)
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise UnsupportedModelError(
            f"{source}: rope type {rope_type!r} is not supported by the builtin engine; "
            f"it runs {list(SUPPORTED_ROPE_TYPES)}"
        )
    if float(scaling.get("partial_rotary_factor", 1.0)) != 1.0:
        raise UnsupportedModelError(f"{source}: partial_rotary_factor is not supported; only full rotary")
    if rope_type == "default":
        return theta, None
    scaling["rope_type"] = rope_type
    return theta, scaling


def _eos_ids(data: dict[str, Any], generation: dict[str, Any]) -> tuple[int, ...]:
    ids: list[int] = []
    for value in (data.get("eos_token_id"), generation.get("eos_token_id")):
        for token in value if isinstance(value, list) else [value]:
            if isinstance(token, int) and token not in ids:
                ids.append(token)
    return tuple(ids)
