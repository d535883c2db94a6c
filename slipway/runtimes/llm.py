"""The `llm` runtime: OpenAI chat and text completions over the built-in engine (or vLLM).

`engine: vllm` is served by slipway.runtimes.vllm (vLLM's server as a child process).

The built-in engine is not part of this build yet: such a package fails at load with a message
saying so, and the replica exits with EXIT_LOAD_FAILED so the deployment is marked failed instead
of restarting.
"""

from __future__ import annotations

from pathlib import Path

from slipway.errors import RuntimeLoadError
from slipway.runtimes.base import Runtime
from slipway.spec.package import PackageSpec


def create_llm_runtime(spec: PackageSpec, package_dir: Path) -> Runtime:
    """The runtime for a kind `llm` package (engine `spec.engine`)."""
    if spec.engine == "vllm":
        from slipway.runtimes.vllm import VllmRuntime

        return VllmRuntime(spec, package_dir)
    raise RuntimeLoadError(
        f"the llm runtime (engine {spec.engine!r}) is not available in this build; "
        "serve the model as a kind 'custom' package for now, or use a build that includes it"
    )
