"""The `llm` runtime: OpenAI chat and text completions over the built-in engine (or vLLM).

Not part of this build yet: a kind `llm` package fails at load with a message saying so, and the
replica exits with EXIT_LOAD_FAILED so the deployment is marked failed instead of restarting.
"""

from __future__ import annotations

from pathlib import Path

from slipway.errors import RuntimeLoadError
from slipway.runtimes.base import Runtime
from slipway.spec.package import PackageSpec


def create_llm_runtime(spec: PackageSpec, package_dir: Path) -> Runtime:
    """The runtime for a kind `llm` package (engine `spec.engine`)."""
    raise RuntimeLoadError(
        f"the llm runtime (engine {spec.engine!r}) is not available in this build; "
        "serve the model as a kind 'custom' package for now, or use a build that includes it"
    )
