"""The fused layer operations of `cpu_layers.c`, bound with ctypes: what a bfloat16 layer does
between its matrix products on CPU, one call each instead of a handful of PyTorch operators.

    rms_norm        x -> x / rms(x) * weight
    add_rms_norm    residual += x, then the residual's norm (the residual stream is updated in place)
    rope_and_cache  q|k|v rows: queries and keys rotated in place, keys and values written to the cache
    silu_and_mul    gate|up rows -> silu(gate) * up

They live in the library `cpu_attention.py` builds (one build, one load per machine); the model
(`llama.py`) takes them for bfloat16 weights and a bfloat16 cache on CPU, and keeps its PyTorch
operators everywhere else (float32, where outputs must match Hugging Face's to the token, and
CUDA). Results agree with the eager bfloat16 path to bfloat16 rounding: these round once, at the
end, where eager rounds after every operator.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from slipway.engine.models.layers import RMSNorm, RotaryEmbedding

_pointer, _int64, _int, _float = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float


class FusedLayerOps:
    """The four operations, on contiguous bfloat16 CPU tensors."""

    def __init__(self, library: Path) -> None:
        loaded = ctypes.CDLL(str(library))
        self._rms_norm = loaded.rms_norm_bf16
        self._rms_norm.argtypes = [_pointer] * 3 + [_int64] * 2 + [_float, _int]
        self._rms_norm.restype = None
        self._add_rms_norm = loaded.add_rms_norm_bf16
        self._add_rms_norm.argtypes = [_pointer] * 4 + [_int64] * 2 + [_float, _int]
        self._add_rms_norm.restype = None
        self._rope_and_cache = loaded.rope_and_cache_bf16
        self._rope_and_cache.argtypes = ([_pointer, _int64] + [_pointer] * 3 + [_int64] * 3 + [_pointer] * 3
                                         + [_int64, _int])
        self._rope_and_cache.restype = ctypes.c_int
        self._silu_and_mul = loaded.silu_and_mul_bf16
        self._silu_and_mul.argtypes = [_pointer] * 2 + [_int64] * 2 + [_int]
        self._silu_and_mul.restype = None

    @staticmethod
    def applies_to(weights_dtype: torch.dtype, cache: torch.Tensor, head_dim: int) -> bool:
        """Whether a model with these weights and this cache can run its layers through these ops."""
        return (weights_dtype == torch.bfloat16 and cache.dtype == torch.bfloat16 and cache.device.type == "cpu"
                and cache.is_contiguous() and head_dim % 2 == 0)

    def rms_norm(self, x: torch.Tensor, norm: RMSNorm) -> torch.Tensor:
        """norm(x) as a new tensor; x: [rows, hidden]."""
        x = x.contiguous()
        out = torch.empty_like(x)
        rows, hidden = x.shape
        self._rms_norm(x.data_ptr(), norm.weight.data_ptr(), out.data_ptr(), rows, hidden, norm.eps,
                       torch.get_num_threads())
        return out

    def add_rms_norm(self, x: torch.Tensor, residual: torch.Tensor, norm: RMSNorm) -> torch.Tensor:
        """residual += x (in place), then norm(residual) as a new tensor; both [rows, hidden]."""
        x = x.contiguous()
        out = torch.empty_like(x)
        rows, hidden = x.shape
        self._add_rms_norm(x.data_ptr(), residual.data_ptr(), norm.weight.data_ptr(), out.data_ptr(), rows, hidden,
                           norm.eps, torch.get_num_threads())
        return out

    def rope_and_cache(self, qkv: torch.Tensor, positions: torch.Tensor, rotary: RotaryEmbedding, num_heads: int,
                       num_kv_heads: int, k_cache: torch.Tensor, v_cache: torch.Tensor,
                       slots: torch.Tensor) -> None:
        """Rotate the queries and keys of `qkv` [rows, (heads + 2 kv_heads) * head_dim] in place by
        `positions` [rows], and write its keys and values into the cache at `slots` [rows].
        k_cache, v_cache: one layer's [kv_heads, blocks, block_size, head_dim]."""
        num_kv, num_blocks, block_size, head_dim = k_cache.shape
        assert qkv.is_contiguous() and num_kv == num_kv_heads and rotary.cos.dtype == torch.bfloat16
        status = self._rope_and_cache(
            qkv.data_ptr(), qkv.shape[0], positions.data_ptr(), rotary.cos.data_ptr(), rotary.sin.data_ptr(),
            num_heads, num_kv_heads, head_dim, k_cache.data_ptr(), v_cache.data_ptr(), slots.data_ptr(),
            num_blocks * block_size, torch.get_num_threads(),
        )
        if status != 0:
            raise ValueError(f"rope_and_cache cannot rotate heads of {head_dim} values (odd)")

    def silu_and_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        """gate_up [rows, 2 * inter] -> silu(gate) * up [rows, inter]."""
        gate_up = gate_up.contiguous()
        rows, width = gate_up.shape
        out = torch.empty(rows, width // 2, dtype=gate_up.dtype)
        self._silu_and_mul(gate_up.data_ptr(), out.data_ptr(), rows, width // 2, torch.get_num_threads())
        return out
