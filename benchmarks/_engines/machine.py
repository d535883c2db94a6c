"""What this machine can compute, and what one token of the model costs.

    attainable FLOP/s   the best of a few timed bf16 (n x n) @ (n x n) matmuls with torch on the
                        engines' thread count: 2 n^3 FLOPs each. A dense matmul is the most a
                        CPU delivers to a model, so an engine's share of it says how far from
                        the hardware it runs.
    FLOPs per token     2 x the parameters, counted from the safetensors header (a multiply and
                        an add per weight); attention over the cache comes on top and is left out.
"""

from __future__ import annotations

import json
import platform
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path

MATMUL_SIZE = 2048
MATMUL_ROUNDS = 5
MATMUL_REPEATS_PER_ROUND = 8


@dataclass(frozen=True)
class MatmulPeak:
    """The fastest bf16 matmul rate seen."""

    flops_per_s: float
    size: int
    threads: int
    rounds: int
    dtype: str = "bfloat16"

    def as_dict(self) -> dict:
        return {**asdict(self), "gflops_per_s": round(self.flops_per_s / 1e9, 1)}


def matmul_peak(threads: int, *, size: int = MATMUL_SIZE, rounds: int = MATMUL_ROUNDS) -> MatmulPeak:
    """Best rate over `rounds` rounds of timed size^3 bf16 matmuls on `threads` threads."""
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(size, size).to(torch.bfloat16)
        b = torch.randn(size, size).to(torch.bfloat16)
        out = torch.empty(size, size, dtype=torch.bfloat16)
        torch.matmul(a, b, out=out)  # first call picks and packs the kernel
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(MATMUL_REPEATS_PER_ROUND):
                torch.matmul(a, b, out=out)
            best = min(best, (time.perf_counter() - started) / MATMUL_REPEATS_PER_ROUND)
    finally:
        torch.set_num_threads(previous_threads)
    return MatmulPeak(flops_per_s=2 * size**3 / best, size=size, threads=threads, rounds=rounds)


def parameter_count(hf_folder: Path) -> int:
    """Parameters stored in the folder's *.safetensors files (tied embeddings counted once)."""
    total = 0
    for file in sorted(Path(hf_folder).glob("*.safetensors")):
        with file.open("rb") as handle:
            (header_bytes,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_bytes))
        for name, tensor in header.items():
            if name != "__metadata__":
                count = 1
                for dim in tensor["shape"]:
                    count *= dim
                total += count
    if total == 0:
        raise ValueError(f"{hf_folder} holds no *.safetensors weights to count")
    return total


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
