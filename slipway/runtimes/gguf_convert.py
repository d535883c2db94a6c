"""GGUF file -> Hugging Face folder, converted once and cached by the file's content hash.

Engines that read only Hugging Face folders (vLLM) cannot take `weights: model.gguf`; this module
dequantizes the GGUF with transformers and saves an ordinary safetensors folder with its tokenizer:

    hf_folder_for(weights) ──► a folder? ── yes ──► used as it is
           │ a .gguf file
           ▼
    $SLIPWAY_HOME/models/<sha256 of the file>/hf-<dtype>/    exists ──► returned (no work)
           │ missing
           ▼
    take hf-<dtype>.lock ─► still missing? ─► load gguf ─► save into hf-<dtype>.tmp-<pid>/ ─► rename

The lock makes two replicas starting at once convert once: the second waits, then finds the folder.
The rename makes a reader see either no folder or a complete one, never a half-written one, even
when a converter is killed midway (its tmp folder is swept by the next conversion).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from slipway.errors import RuntimeLoadError

log = logging.getLogger(__name__)

GGUF_SUFFIX = ".gguf"
# Conversion of a small model takes ~20 s on 2 CPU cores; a 7B one takes minutes.
DEFAULT_LOCK_TIMEOUT_SECONDS = 1800.0
_HASH_CHUNK_BYTES = 4 * 1024 * 1024
_LOCK_POLL_SECONDS = 0.2

SaveDtype = Literal["float32", "bfloat16"]
# write(gguf_file, new_folder, dtype): fills the folder with a Hugging Face model and tokenizer.
Writer = Callable[[Path, Path, SaveDtype], None]


class GgufConversionError(RuntimeLoadError):
    """A GGUF file could not be turned into a Hugging Face folder."""

    code = "gguf_conversion_failed"


def slipway_home() -> Path:
    """The state folder: $SLIPWAY_HOME, or ~/.slipway."""
    return Path(os.environ.get("SLIPWAY_HOME") or Path.home() / ".slipway").expanduser()


def is_gguf(path: Path) -> bool:
    return Path(path).is_file() and Path(path).suffix.lower() == GGUF_SUFFIX


def hf_folder_for(weights: Path, *, models_dir: Path | None = None, dtype: SaveDtype = "float32",
                  lock_timeout: float = DEFAULT_LOCK_TIMEOUT_SECONDS, write: Writer | None = None) -> Path:
    """A Hugging Face folder serving `weights`: the folder itself, or the cached conversion of a .gguf.

    Blocking and CPU-heavy the first time: call it from a worker thread.
    """
    weights = Path(weights)
    if weights.is_dir():
        return weights
    if not is_gguf(weights):
        raise GgufConversionError(
            f"weights {weights} is neither a Hugging Face folder nor a {GGUF_SUFFIX} file; "
            "point 'weights' in slipway.yaml at a folder with config.json, or at a .gguf file"
        )
    models_dir = Path(models_dir) if models_dir is not None else slipway_home() / "models"
    destination = models_dir / file_sha256(weights) / f"hf-{dtype}"
    return convert_gguf(weights, destination, dtype=dtype, lock_timeout=lock_timeout, write=write)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def convert_gguf(gguf_file: Path, destination: Path, *, dtype: SaveDtype = "float32",
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT_SECONDS,
                 write: Writer | None = None) -> Path:
    """Convert `gguf_file` into the folder `destination` unless it is there already; returns it.

    `write(gguf_file, folder, dtype)` fills a new folder; the default dequantizes with transformers.
    """
    write = write or write_hf_folder
    destination = Path(destination)
    if _is_complete(destination):
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(destination.with_name(destination.name + ".lock"), lock_timeout):
        if _is_complete(destination):  # another process converted it while we waited
            return destination
        _sweep_abandoned_tmp_folders(destination)
        tmp = destination.with_name(f"{destination.name}.tmp-{os.getpid()}")
        started = time.monotonic()
        log.info("converting gguf to a Hugging Face folder",
                 extra={"gguf": str(gguf_file), "folder": str(destination)})
        try:
            write(Path(gguf_file), tmp, dtype)
            os.replace(tmp, destination)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("gguf converted",
                 extra={"folder": str(destination), "seconds": round(time.monotonic() - started, 1)})
    return destination


def write_hf_folder(gguf_file: Path, folder: Path, dtype: SaveDtype) -> None:
    """Dequantize `gguf_file` with transformers and save model and tokenizer into the new `folder`."""
    model, tokenizer = load_gguf(gguf_file, dtype)
    save_hf_folder(model, tokenizer, folder)


def load_gguf(gguf_file: Path, dtype: SaveDtype) -> tuple[Any, Any]:
    """(model, tokenizer) read from `gguf_file` by transformers, weights dequantized to `dtype`."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise GgufConversionError(f"converting {gguf_file.name} needs torch and transformers: {exc}") from exc
    try:
        model = AutoModelForCausalLM.from_pretrained(
            gguf_file.parent, gguf_file=gguf_file.name, dtype=getattr(torch, dtype)
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    except ImportError as exc:  # transformers names the missing package (gguf, accelerate)
        raise GgufConversionError(
            f"reading {gguf_file} needs a package that is missing: {exc}; pip install gguf accelerate"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - any parse failure means this file cannot be served
        raise GgufConversionError(
            f"transformers could not read {gguf_file} ({type(exc).__name__}: {exc}); check that the file is a "
            "complete GGUF of an architecture transformers supports, or point 'weights' at a Hugging Face folder"
        ) from exc
    return model, tokenizer


def save_hf_folder(model: Any, tokenizer: Any, folder: Path) -> None:
    """Save a model read from a GGUF as a plain safetensors folder (the model is changed in place)."""
    # The weights are dequantized in memory; without this the folder would claim to be a GGUF
    # quantization and every reader would look for the .gguf file again.
    model.hf_quantizer = None
    for holder in (model, model.config):
        if hasattr(holder, "quantization_config"):
            delattr(holder, "quantization_config")
    folder.mkdir(parents=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def _sweep_abandoned_tmp_folders(destination: Path) -> None:
    """Remove tmp folders of converters that died: only one converter runs at a time (we hold the lock)."""
    for leftover in destination.parent.glob(f"{destination.name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def _exclusive_lock(path: Path, timeout: float) -> Iterator[None]:
    """An flock on `path`, waited for at most `timeout` seconds; freed by the kernel if we die."""
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise GgufConversionError(
                        f"waited {timeout:.0f}s for another process converting into {path.with_suffix('')}; "
                        f"if none is running, delete {path} and start again"
                    ) from None
                time.sleep(_LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
