"""What a replica runs: one model package behind the `Runtime` contract (see base.py).

    create_runtime(spec, package_dir) -> Runtime
        kind custom     -> custom.CustomRuntime      the package's model.py
        kind embedding  -> embedding.EmbeddingRuntime sentence-transformers weights, offline
        kind llm        -> llm.create_llm_runtime     the LLM engine

Runtime modules are imported only for the kind asked for, so a custom replica never pays for
importing torch.
"""

from __future__ import annotations

from pathlib import Path

from slipway.runtimes.base import BadRequestError, Chunk, Runtime, UnsupportedRouteError, is_stream
from slipway.runtimes.weights import WeightsNotFoundError, resolve_weights
from slipway.spec.package import PackageSpec


def create_runtime(spec: PackageSpec, package_dir: Path) -> Runtime:
    """The runtime for `spec.kind`, not yet loaded (call `await runtime.load()`)."""
    package_dir = Path(package_dir)
    if spec.kind == "custom":
        from slipway.runtimes.custom import CustomRuntime

        return CustomRuntime(spec, package_dir)
    if spec.kind == "embedding":
        from slipway.runtimes.embedding import EmbeddingRuntime

        return EmbeddingRuntime(spec, package_dir)
    from slipway.runtimes.llm import create_llm_runtime

    return create_llm_runtime(spec, package_dir)


__all__ = [
    "BadRequestError", "Chunk", "Runtime", "UnsupportedRouteError", "WeightsNotFoundError",
    "create_runtime", "is_stream", "resolve_weights",
]
