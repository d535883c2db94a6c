"""The `llm` runtime: OpenAI chat and text completions over an LLM engine.

    engine: builtin  ->  llm_builtin.BuiltinLlmRuntime   slipway's own engine, in the replica's process
    engine: vllm     ->  vllm.VllmRuntime                vLLM's server as a child process, proxied

Both serve /v1/chat/completions, /v1/completions and /predict, and report the same /stats keys
where they overlap. Each engine's module is imported only when a package asks for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from slipway.runtimes.base import BadRequestError, PredictResult, Runtime
from slipway.spec.package import PackageSpec


class LlmRuntime(Runtime):
    """What both engines share: `/predict` routes a chat body or a completion body."""

    kind = "llm"

    async def predict(self, body: Any) -> PredictResult:
        """`/predict` takes either shape: `messages` is a chat completion, `prompt` a completion."""
        if isinstance(body, dict) and "messages" in body:
            return await self.chat_completions(body)
        if isinstance(body, dict) and "prompt" in body:
            return await self.completions(body)
        raise BadRequestError("a kind 'llm' /predict body needs 'messages' (chat) or 'prompt' (completion)",
                              param="messages")

    def engine_stats(self) -> dict[str, Any]:
        """The engine's counters and gauges under the /stats keys, without anything costly to
        gather (a replica's /metrics reads it at every scrape)."""
        return self.stats()

    def latency_histograms(self) -> Mapping[str, Any]:
        """Latency histogram snapshots by name (`time_to_first_token_seconds`,
        `inter_token_latency_seconds`, `e2e_request_latency_seconds`), each with `bounds`,
        `counts`, `sum` and `count`; empty when the engine does not measure them."""
        return {}


def create_llm_runtime(spec: PackageSpec, package_dir: Path) -> Runtime:
    """The runtime for a kind `llm` package (engine `spec.engine`, builtin when unset)."""
    if spec.engine == "vllm":
        from slipway.runtimes.vllm import VllmRuntime

        return VllmRuntime(spec, package_dir)
    from slipway.runtimes.llm_builtin import BuiltinLlmRuntime

    return BuiltinLlmRuntime(spec, package_dir)
