"""The CPU attention kernels: `cpu_attention.c`, built once per machine and loaded with ctypes.
The same library carries the fused layer operators of `cpu_layers.c` (bound in `cpu_layers.py`).

Two kernels, both reading the paged cache in place with an online softmax:

- `paged_attention_queries` (`__call__`): decodes and speculative drafts, a few queries per
  sequence over hundreds or thousands of cached tokens. Eager PyTorch first copies every
  sequence's blocks out of the cache (`index_select`) and runs SDPA over the copy; on SmolLM2 at
  16 sequences of ~900 tokens the kernel takes about a fifth of that time per layer.
- `paged_prefill_attention` (`prefill`): one prompt chunk over its sequence's past and itself,
  as small bfloat16 matrix products (vdpbf16ps); a 512-token chunk over 2,048 tokens takes less
  than half of SDPA's time (bfloat16 with AVX-512 BF16 only).

See the C file for the layouts and `docs/architecture.md` for the figures.

The sources ship with the package and are compiled on first use with the machine's C compiler
($CC, else gcc, cc or clang) for the machine's own CPU (`-march=native`), into
`$SLIPWAY_HOME/kernels/cpu_kernels-<hash>.so`; the hash covers the sources, the compiler, the
flags and the CPU, so a home shared between different machines holds one build per kind. Building takes about
a second; later starts only load the file. With no compiler, or when the build fails, `load_kernel`
returns None (with one warning) and attention stays on the PyTorch path, which gives the same
results. The OpenMP runtime the library links is the one PyTorch already loaded (same soname), so
both share one pool of threads.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCES = tuple(Path(__file__).with_name(name) for name in ("cpu_attention.c", "cpu_layers.c"))
"""Compiled together into one library; `cpu_layers.py` binds the second file's functions."""
HEADERS = (Path(__file__).with_name("cpu_kernels.h"),)
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared"]
OPENMP_FLAG = "-fopenmp"
SUPPORTED_DTYPES = (torch.bfloat16, torch.float32)

_lock = threading.Lock()
_loaded: dict[Path, "PagedAttentionKernel | None"] = {}


class PagedAttentionKernel:
    """The built library's two kernels, called with tensors."""

    def __init__(self, library: Path) -> None:
        self.library = library
        loaded = ctypes.CDLL(str(library))
        self._function = loaded.paged_attention_queries
        self._function.restype = ctypes.c_int
        self._function.argtypes = ([ctypes.c_void_p] * 3 + [ctypes.c_int] + [ctypes.c_void_p] * 4
                                   + [ctypes.c_int64] * 7 + [ctypes.c_int])
        self._prefill = loaded.paged_prefill_attention
        self._prefill.restype = ctypes.c_int
        self._prefill.argtypes = ([ctypes.c_void_p] * 4 + [ctypes.c_int64] * 2 + [ctypes.c_float, ctypes.c_void_p]
                                  + [ctypes.c_int64] * 5 + [ctypes.c_void_p, ctypes.c_int])
        self.prefill_unsupported: set[tuple[int, ...]] = set()
        """Shapes the prefill kernel refused (no AVX-512 BF16, head_dim): not asked again."""

    def supports(self, cache: torch.Tensor) -> bool:
        return cache.device.type == "cpu" and cache.dtype in SUPPORTED_DTYPES and cache.is_contiguous()

    def __call__(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                 query_starts: torch.Tensor, context_lens: torch.Tensor) -> torch.Tensor | None:
        """q [tokens, heads, head_dim] -> [tokens, heads, head_dim] in the cache's dtype, or None when
        the shapes are beyond what the kernel handles (the caller then uses PyTorch).

        k_cache, v_cache: one layer's [kv_heads, blocks, block_size, head_dim]; block_tables
        [seqs, max_blocks] int64; query_starts [seqs + 1] int64 (the queries of sequence s are rows
        query_starts[s]..query_starts[s+1]-1 of q); context_lens [seqs] int64, tokens cached per
        sequence this step's included.
        """
        num_tokens, num_heads, head_dim = q.shape
        num_kv_heads, num_blocks, block_size, _ = k_cache.shape
        scaled = (q.to(torch.float32) * head_dim ** -0.5).contiguous()
        out = torch.empty(num_tokens, num_heads, head_dim, dtype=k_cache.dtype)
        tables = block_tables.contiguous()
        starts, lengths = query_starts.contiguous(), context_lens.contiguous()
        status = self._function(
            scaled.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), int(k_cache.dtype == torch.bfloat16),
            tables.data_ptr(), starts.data_ptr(), lengths.data_ptr(), out.data_ptr(),
            tables.shape[0], tables.shape[1], num_heads, num_kv_heads, num_blocks, block_size, head_dim,
            torch.get_num_threads(),
        )
        return out if status == 0 else None

    def prefill(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_table: torch.Tensor,
                past: int) -> torch.Tensor | None:
        """One sequence's chunk: q [tokens, heads, head_dim] at positions past .. past + tokens - 1,
        over its first past + tokens cached tokens, causally -> [tokens, heads, head_dim]; None
        where the kernel does not apply (bfloat16 with AVX-512 BF16 only; PyTorch then attends).

        block_table: [blocks] int64, the sequence's blocks covering them."""
        num_tokens, num_heads, head_dim = q.shape
        num_kv_heads, num_blocks, block_size, _ = k_cache.shape
        shape = (num_heads, num_kv_heads, head_dim)
        if k_cache.dtype != torch.bfloat16 or q.dtype != torch.bfloat16 or shape in self.prefill_unsupported:
            return None
        queries = q.contiguous()
        tables = block_table.contiguous()
        padded_keys = -(-(past + num_tokens) // 16) * 16
        scratch = torch.empty(num_kv_heads * 2 * padded_keys * head_dim, dtype=torch.bfloat16)
        out = torch.empty(num_tokens, num_heads, head_dim, dtype=torch.bfloat16)
        status = self._prefill(
            queries.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), tables.data_ptr(), past, num_tokens,
            head_dim ** -0.5, out.data_ptr(), num_heads, num_kv_heads, num_blocks, block_size, head_dim,
            scratch.data_ptr(), torch.get_num_threads(),
        )
        if status != 0:
            self.prefill_unsupported.add(shape)
            return None
        return out


def load_kernel(cache_dir: Path | None = None) -> PagedAttentionKernel | None:
    """The kernels, built on first use and cached; None when this machine cannot build them."""
    folder = cache_dir or default_cache_dir()
    with _lock:
        if folder not in _loaded:
            _loaded[folder] = _build_and_load(folder)
        return _loaded[folder]


def default_cache_dir() -> Path:
    home = Path(os.environ.get("SLIPWAY_HOME") or Path.home() / ".slipway").expanduser()
    return home / "kernels"


def _build_and_load(folder: Path) -> PagedAttentionKernel | None:
    if platform.system() != "Linux":
        return None  # the build flags assume gcc or clang on Linux; elsewhere PyTorch attends
    compiler = _find_compiler()
    if compiler is None:
        log.warning("no C compiler found ($CC, gcc, cc or clang): attention on CPU uses the slower PyTorch path")
        return None
    sources = [path.read_bytes() for path in (*SOURCES, *HEADERS)]
    key = hashlib.sha256(b"\0".join([
        *sources, _compiler_version(compiler).encode(), " ".join(FLAGS).encode(), _cpu_signature().encode(),
    ])).hexdigest()[:24]
    library = folder / f"cpu_kernels-{key}.so"
    if not library.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            folder = Path(tempfile.gettempdir()) / "slipway-kernels"
            folder.mkdir(parents=True, exist_ok=True)
            library = folder / library.name
        if not library.exists() and not _compile(compiler, library):
            return None
    try:
        return PagedAttentionKernel(library)
    except OSError as error:
        log.warning("could not load the CPU attention kernel; attention uses the PyTorch path",
                    extra={"library": str(library), "error": str(error)})
        return None


def _compile(compiler: str, library: Path) -> bool:
    """Compile into a temporary file and move it in place, so that replicas starting together
    never load a half-written library; with OpenMP first, then without (one thread)."""
    partial = library.with_name(f".{library.name}.{os.getpid()}.tmp")
    error = ""
    for flags in (FLAGS + [OPENMP_FLAG], FLAGS):
        result = subprocess.run([compiler, *flags, "-o", str(partial), *map(str, SOURCES), "-lm"],
                                capture_output=True, text=True)
        if result.returncode == 0:
            os.replace(partial, library)
            log.info("built the CPU attention kernel", extra={"library": str(library), "openmp": OPENMP_FLAG in flags})
            return True
        error = (result.stderr.strip().splitlines() or ["no output"])[0]
    partial.unlink(missing_ok=True)
    log.warning("building the CPU attention kernel failed; attention uses the PyTorch path",
                extra={"compiler": compiler, "error": error})
    return False


def _find_compiler() -> str | None:
    candidates = [os.environ["CC"]] if os.environ.get("CC") else ["gcc", "cc", "clang"]
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    return None


def _compiler_version(compiler: str) -> str:
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return compiler


def _cpu_signature() -> str:
    """The CPU's model and feature flags: a build for -march=native is only good on the same kind."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = [line for line in lines if line.startswith(("model name", "flags", "Features"))]
    return "\n".join(dict.fromkeys(wanted))
