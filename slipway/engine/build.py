"""From an `EngineConfig` and a model folder to the parts an engine runs on.

Resolves what the config leaves open (device, dtype, max_model_len, number of KV blocks,
whether to compile), checks that the pieces fit together (a whole max_model_len sequence must
fit in the cache), loads the weights (folding in `merge_adapter`, a LoRA adapter, if set) and
the tokenizer, loads the CPU attention kernels (built once per machine), allocates the cache,
and compiles the decode step when asked to (or else, for bfloat16 on CPU, packs the linear
layers for oneDNN).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from slipway.engine.config import EngineConfig
from slipway.engine.errors import UnsupportedModelError
from slipway.engine.lora import LoraAdapterError, merge_lora
from slipway.engine.models.config import ModelConfig
from slipway.engine.models.cpu_attention import load_kernel
from slipway.engine.models.loader import load_model
from slipway.engine.models.packed import can_pack, pack_linear_layers
from slipway.engine.runner import ModelRunner, kv_cache_bytes_per_block

log = logging.getLogger(__name__)

DEFAULT_MAX_MODEL_LEN = 4096
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class EngineParts:
    model_config: ModelConfig
    runner: ModelRunner
    max_model_len: int
    num_kv_blocks: int
    device: torch.device
    dtype: torch.dtype
    tokenizer: Any | None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str) -> torch.dtype:
    # bfloat16 linear layers are several times faster than float32 on CPUs with AVX-512 BF16 and
    # on GPUs (see `compute_dtype_for` for the attention math).
    return torch.bfloat16 if name == "auto" else _DTYPES[name]


def compute_dtype_for(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """Precision of attention math: the weights' own, except float16 on CPU, which has no fast kernels.

    bfloat16 on CPU is as fast as float32 for prompt chunks and about ten times faster for decode
    steps, whose gathered blocks would otherwise be converted to float32 first (the conversion
    costs more than the attention); SDPA accumulates in float32 either way.
    """
    return torch.float32 if device.type == "cpu" and dtype == torch.float16 else dtype


def resolve_max_model_len(config: EngineConfig, model: ModelConfig, source: str) -> int:
    limit = model.max_position_embeddings
    max_model_len = config.max_model_len or min(limit, DEFAULT_MAX_MODEL_LEN)
    if max_model_len > limit:
        raise UnsupportedModelError(
            f"{source}: max_model_len {max_model_len} exceeds the model's max_position_embeddings ({limit}); "
            f"set runtime.max_model_len to {limit} or less"
        )
    if model.sliding_window is not None and max_model_len > model.sliding_window:
        raise UnsupportedModelError(
            f"{source}: the builtin engine does not implement sliding-window attention; set max_model_len to "
            f"{model.sliding_window} or less (the window) so that it never applies"
        )
    if not config.enable_chunked_prefill and config.max_num_batched_tokens < max_model_len:
        raise UnsupportedModelError(
            f"max_num_batched_tokens ({config.max_num_batched_tokens}) is below max_model_len ({max_model_len}) "
            "with chunked prefill off; raise it or enable_chunked_prefill"
        )
    return max_model_len


def build_engine_parts(model_path: str | Path, config: EngineConfig, tokenizer: Any | None | str = "auto") -> EngineParts:
    """Load everything the engine needs from `model_path`; see the module docstring."""
    model_path = Path(model_path)
    model_config = ModelConfig.from_folder(model_path)
    max_model_len = resolve_max_model_len(config, model_config, str(model_path))
    device, dtype = resolve_device(config.device), resolve_dtype(config.dtype)

    per_block = kv_cache_bytes_per_block(model_config, config.block_size, dtype)
    num_kv_blocks = config.num_kv_blocks or config.kv_cache_memory // per_block
    needed = -(-max_model_len // config.block_size)
    if num_kv_blocks < needed:
        raise UnsupportedModelError(
            f"the KV cache holds {num_kv_blocks} blocks of {config.block_size} tokens, fewer than the {needed} one "
            f"sequence of max_model_len {max_model_len} needs; raise kv_cache_memory to at least "
            f"{needed * per_block} bytes (or num_kv_blocks to {needed}), or lower max_model_len"
        )

    # The tokenizer (mostly importing transformers) loads, and the CPU attention kernel builds, in
    # threads while the weights load and pack.
    with ThreadPoolExecutor(2, thread_name_prefix="slipway-load") as pool:
        pending_tokenizer = pool.submit(load_tokenizer, model_path) if tokenizer == "auto" else None
        pending_kernel = pool.submit(load_kernel) if config.cpu_attention_kernel and device.type == "cpu" else None
        model = load_model(model_path, dtype=dtype, device=device, max_positions=max_model_len)
        if config.merge_adapter:  # before packing or compiling, which take the plain weights
            merge_adapter(model, Path(config.merge_adapter))
        max_query = 1 + (config.speculative.num_speculative_tokens if config.speculative else 0)
        runner = ModelRunner(model, num_blocks=num_kv_blocks, block_size=config.block_size, kv_dtype=dtype,
                             compute_dtype=compute_dtype_for(device, dtype), max_batched_query_len=max_query,
                             attention_kernel=pending_kernel.result() if pending_kernel is not None else None)
        if should_compile(config, device, model):
            # The compiled graph packs its own copy of the weights from the plain ones it traces.
            compile_decode(runner, background=config.compile_in_background)
        elif can_pack(device, dtype):
            pack_linear_layers(model)
        if pending_tokenizer is not None:
            tokenizer = pending_tokenizer.result()
    return EngineParts(model_config, runner, max_model_len, num_kv_blocks, device, dtype, tokenizer)


def merge_adapter(model: torch.nn.Module, folder: Path) -> None:
    """Fold `EngineConfig.merge_adapter` into the weights; a folder that does not fit fails the load."""
    started = time.monotonic()
    try:
        adapter = merge_lora(model, folder)
    except LoraAdapterError as error:
        raise UnsupportedModelError(f"merge_adapter: {error.message}") from None
    log.info("merged a LoRA adapter into the base weights", extra={
        "adapter": str(adapter.folder), "rank": adapter.rank, "seconds": round(time.monotonic() - started, 2)})


def should_compile(config: EngineConfig, device: torch.device, model: torch.nn.Module) -> bool:
    """Only when `config.compile` asks for it, on CPU with a C++ compiler for inductor.

    Off by default: on a 2-core machine with a cold inductor cache the compile takes minutes; in
    the background (`compile_in_background`) readiness does not wait for it, but the first
    minutes of serving share the cores with it.
    """
    if not config.compile or device.type != "cpu":
        return False
    if not has_cpp_compiler():
        log.warning("compile was asked for but no C++ compiler was found for inductor; running eagerly")
        return False
    return True


def has_cpp_compiler() -> bool:
    """Whether inductor will find a C++ compiler (it honours $CXX, then looks for the usual ones)."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "clang++", "c++"]
    return any(shutil.which(name) for name in candidates)


def compile_decode(runner: ModelRunner, *, background: bool) -> None:
    """Compile the runner's decode step, now or in a background thread; failures are logged and
    leave the engine eager."""
    if background:
        threading.Thread(target=_compile_decode_now, args=(runner,), name="slipway-compile", daemon=True).start()
    else:
        _compile_decode_now(runner)


def _compile_decode_now(runner: ModelRunner) -> None:
    log.info("compiling the decode step (minutes on 2 cores with a cold inductor cache)")
    try:
        seconds = runner.enable_compiled_decode()
    except Exception as error:  # inductor failures are many and varied; eager still serves
        log.warning("compiling the decode step failed; it runs eagerly (set compile: false to skip trying)",
                    extra={"error": f"{type(error).__name__}: {error}"})
        return
    log.info("compiled the decode step; decode steps run compiled from now on", extra={"seconds": round(seconds, 1)})


def load_tokenizer(model_path: Path) -> Any | None:
    """The folder's Hugging Face tokenizer, or None when it ships none."""
    if not any((model_path / name).is_file() for name in _TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer  # slow import, only when there is a tokenizer

    return AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
