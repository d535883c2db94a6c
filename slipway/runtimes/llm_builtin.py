"""The `builtin` engine of `kind: llm` packages: slipway's own engine, in the replica's process.

    load()   weights ─► Hugging Face folder (a .gguf is converted once into float32, the exact
             dequantization; see gguf_convert.py) ─► torch threads = the replica's cores
             ─► AsyncLLMEngine built in a worker thread (EngineConfig from `runtime:`)
    chat_completions / completions
             body ─► openai_text: 400s naming the parameter ─► prompt token ids (worker thread)
             ─► one engine request per prompt ─► a whole answer, or a stream of chunks (openai_output)
    a stream closed early (the client went away) aborts its engine requests at once
    stats()  the engine's counters under the keys vllm.py reports, plus the builtin's own, the
             latency quantiles, and `cached_block_hashes` for cache-aware routing (below)

`cached_block_hashes` lists up to `max_cached_block_hashes` KV blocks in the prefix cache, most
recently used first, as JSON integers: each the block's chained hash cut to 63 bits, exactly what
`slipway.routing.hashing.block_hash_chain` computes for the same token ids and `kv_block_size`.

`runtime.dtype: auto` lets the engine pick (bfloat16: fastest on CPUs with AVX-512 BF16 and on
GPUs); `float32` computes exactly what Hugging Face transformers computes in float32.

LoRA adapters, as the vllm engine serves them:

    adapters: {name: folder} in slipway.yaml   registered at load (folders resolved like weights)
    a request whose `model` names an adapter   served with it (any other `model`: the base)
    load_lora_adapter / unload_lora_adapter    register and unregister at run time (vLLM's routes)
    ensure_lora_adapter(name, folder)          what the gateway's adapter headers ask: register
                                               on first sight, again when the folder changed
    runtime.merge_adapter in slipway.yaml      a folder folded into the base weights at load:
    (or SLIPWAY_LLM_MERGE_ADAPTER)             the replica serves the merged model as its base
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Mapping, TypeVar

from pydantic import BaseModel, Field, ValidationError

from slipway.engine import (
    AsyncLLMEngine, EngineConfig, EngineRequestError, LoraAdapterError, RequestOutput, accumulate,
)
from slipway.errors import NotFoundError, RuntimeLoadError
from slipway.runtimes.base import BadRequestError, PredictResult
from slipway.runtimes.embedding import torch_threads
from slipway.runtimes.llm import LlmRuntime
from slipway.runtimes.gguf_convert import hf_folder_for
from slipway.runtimes.openai_output import (
    ChunkWriter, TokenStrings, chat_completion, chat_logprobs, completion_logprobs, text_completion, usage,
)
from slipway.runtimes.openai_text import (
    GenerationPlan, chat_prompt_ids, completion_prompt_ids, parse_chat_request, parse_completion_request,
    plan_generation,
)
from slipway.runtimes.weights import WeightsNotFoundError, resolve_weights
from slipway.spec.package import PackageSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

# Outputs of a multi-prompt request waiting for the consumer before the producers pause.
_MAX_MERGED_OUTPUTS = 256


class BuiltinLlmConfig(BaseModel):
    """Engine knobs that `runtime:` in slipway.yaml does not name; each field reads
    SLIPWAY_LLM_<FIELD>, so a package can set them under `runtime.env`. None keeps the engine's default."""

    kv_cache_memory: str | None = Field(None, description="KV cache size, e.g. '512Mi' (engine default 256Mi).")
    max_num_batched_tokens: int | None = Field(None, ge=1, description="Token budget of one engine step.")
    short_prefill_tokens: int | None = Field(
        None, ge=0, description="Prompts with at most this many tokens left go first (engine default 0: off).")
    enable_prefix_caching: bool | None = Field(None, description="Reuse KV blocks of prompts sharing a prefix.")
    num_speculative_tokens: int = Field(0, ge=0, le=16, description="N-gram draft tokens per greedy step; 0 is off.")
    device: str | None = Field(None, description="'cpu', 'cuda', 'cuda:N'; None picks cuda when available.")
    max_cached_block_hashes: int = Field(4096, ge=0, le=1_000_000, description=(
        "Most block hashes in /stats `cached_block_hashes` (most recently used first); 0 leaves it empty."))
    max_loras: int | None = Field(None, ge=1, description="LoRA adapters loaded at once (engine default 8).")
    max_lora_rank: int | None = Field(None, ge=1, description="Largest adapter rank accepted (engine default 64).")
    merge_adapter: str | None = Field(None, description=(
        "A PEFT LoRA folder (relative to the package, or absolute, or pkg:) merged into the base weights at "
        "load; the replica then serves the merged model as its base."))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "BuiltinLlmConfig":
        environ = os.environ if environ is None else environ
        values = {name: environ[f"SLIPWAY_LLM_{name.upper()}"] for name in cls.model_fields
                  if f"SLIPWAY_LLM_{name.upper()}" in environ}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise RuntimeLoadError(f"a SLIPWAY_LLM_* setting is invalid ({exc.errors()[0]['loc'][0]}: "
                                   f"{exc.errors()[0]['msg']}); fix it under runtime.env in slipway.yaml") from None

    def engine_overrides(self) -> dict[str, Any]:
        overrides: dict[str, Any] = {key: value for key, value in {
            "kv_cache_memory": self.kv_cache_memory, "max_num_batched_tokens": self.max_num_batched_tokens,
            "short_prefill_tokens": self.short_prefill_tokens,
            "enable_prefix_caching": self.enable_prefix_caching, "device": self.device,
            "max_loras": self.max_loras, "max_lora_rank": self.max_lora_rank,
        }.items() if value is not None}
        if self.num_speculative_tokens:
            overrides["speculative"] = {"num_speculative_tokens": self.num_speculative_tokens}
        return overrides


class BuiltinLlmRuntime(LlmRuntime):
    """A kind `llm` package served by the built-in engine (see the module docstring)."""


    def __init__(self, spec: PackageSpec, package_dir: Path, *, config: BuiltinLlmConfig | None = None) -> None:
        self.spec = spec
        self.package_dir = Path(package_dir)
        self.config = config or BuiltinLlmConfig.from_env()
        self.engine: AsyncLLMEngine | None = None
        self.model_dir: Path | None = None
        # Tokenizing and chat templates are CPU work kept off the event loop; one thread is plenty.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="llm-tokenize")
        self._strings: TokenStrings | None = None
        self._prompt_tokens_total = 0
        # Adapter name -> (the path the gateway gave, the folder it resolved to) at its last
        # ensure_lora_adapter: a request naming both again needs no filesystem call.
        self._ensured: dict[str, tuple[str, Path]] = {}

    # -- lifecycle -------------------------------------------------------------------------

    async def load(self) -> None:
        overrides = self.config.engine_overrides()
        merged = self.spec.runtime.merge_adapter or self.config.merge_adapter
        if merged:
            overrides["merge_adapter"] = str(resolve_weights(merged, self.package_dir))
        try:
            engine_config = EngineConfig.from_runtime_settings(self.spec.runtime, **overrides)
        except ValidationError as exc:
            raise RuntimeLoadError(f"the engine settings are invalid: {exc}; fix runtime: in slipway.yaml") from None
        # Converting a GGUF computes with torch: in a thread that ends with it, so that its OpenMP
        # pool goes too (see AsyncLLMEngine.from_pretrained for why only the engine's may stay).
        self.model_dir = await _in_own_thread(self._model_folder)
        threads = torch_threads(self.spec.resources.cpu)
        started = time.monotonic()
        self.engine = await asyncio.to_thread(self._build_engine, self.model_dir, engine_config, threads)
        if self.engine.tokenizer is None:
            raise RuntimeLoadError(f"{self.model_dir} has no tokenizer (tokenizer.json or tokenizer_config.json); "
                                   "the llm runtime needs one to read text: add it to the weights folder")
        self._strings = TokenStrings(self.engine.tokenizer)
        for name, path in self.spec.adapters.items():
            try:
                await self._add_adapter(name, path)
            except (BadRequestError, EngineRequestError) as exc:
                raise RuntimeLoadError(f"adapters.{name} in slipway.yaml: {exc.message}") from None
        self.engine.start()
        log.info("builtin engine loaded", extra={"model_dir": str(self.model_dir), "threads": threads,
                                                 "seconds": round(time.monotonic() - started, 2)})

    def _model_folder(self) -> Path:
        assert self.spec.weights is not None  # the spec requires weights for kind llm
        weights = resolve_weights(self.spec.weights, self.package_dir)
        # float32 is the exact dequantization of a GGUF. An engine in bfloat16 (the default, `auto`)
        # reads a bfloat16 conversion instead: the same weights after the same rounding, minus the
        # ~1.5 s of casting half a gigabyte at every start.
        in_bfloat16 = self.spec.runtime.dtype in ("bfloat16", "auto")
        return hf_folder_for(weights, dtype="bfloat16" if in_bfloat16 else "float32")

    @staticmethod
    def _build_engine(model_dir: Path, config: EngineConfig, threads: int | None) -> AsyncLLMEngine:
        if threads is not None:
            import torch

            # Process-wide for threads that compute later: the engine's thread starts after this.
            torch.set_num_threads(threads)
        return AsyncLLMEngine.from_pretrained(model_dir, config)

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.shutdown()
            self.engine = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- requests --------------------------------------------------------------------------

    async def chat_completions(self, body: dict[str, Any]) -> PredictResult:
        engine = self._require_engine()
        request = parse_chat_request(body)
        prompt = await self._in_worker(chat_prompt_ids, engine.tokenizer, request)
        plan = plan_generation("chat", request, [prompt], engine.engine.max_model_len)
        return await self._answer(plan, self._adapter_named_by(body))

    async def completions(self, body: dict[str, Any]) -> PredictResult:
        engine = self._require_engine()
        request = parse_completion_request(body)
        vocab_size = engine.engine.model_config.vocab_size
        prompts = await self._in_worker(completion_prompt_ids, engine.tokenizer, request, vocab_size)
        echo_texts = None
        if request.echo:
            echo_texts = [request.prompt] if isinstance(request.prompt, str) else await self._in_worker(
                engine.tokenizer.batch_decode, prompts)
        plan = plan_generation("completion", request, prompts, engine.engine.max_model_len, echo_texts=echo_texts)
        return await self._answer(plan, self._adapter_named_by(body))

    async def _in_worker(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _require_engine(self) -> AsyncLLMEngine:
        if self.engine is None:
            raise RuntimeLoadError("the model is not loaded yet; wait for GET /health/ready to answer 200")
        return self.engine

    def _adapter_named_by(self, body: dict[str, Any]) -> str | None:
        """The adapter a body's `model` names, or None (the base) for any other value."""
        model = body.get("model")
        return model if isinstance(model, str) and model in self._require_engine().lora_folders() else None

    async def _answer(self, plan: GenerationPlan, lora_name: str | None) -> PredictResult:
        engine = self._require_engine()
        for prompt in plan.prompts:  # refuse now, before a stream's first chunk is sent
            try:
                engine.engine.validate_request(prompt, plan.params)
            except EngineRequestError as exc:
                raise BadRequestError(exc.message, param="messages" if plan.route == "chat" else "prompt",
                                      code=exc.code) from None
        self._prompt_tokens_total += sum(len(prompt) for prompt in plan.prompts)
        response_id = ("chatcmpl-" if plan.route == "chat" else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        if plan.stream:
            return self._stream(plan, response_id, created, lora_name)
        return await self._whole(plan, response_id, created, lora_name)

    async def _whole(self, plan: GenerationPlan, response_id: str, created: int,
                     lora_name: str | None) -> dict[str, Any]:
        deltas: list[list[RequestOutput]] = [[] for _ in plan.prompts]
        async with aclosing(self._generate(plan, lora_name)) as outputs:
            async for prompt_index, output in outputs:
                deltas[prompt_index].append(output)
        n = plan.params.n
        choices = []
        prompt_tokens = completion_tokens = cached_tokens = 0
        for prompt_index, outputs_of_prompt in enumerate(deltas):
            whole = accumulate(outputs_of_prompt)
            prompt_tokens += whole.num_prompt_tokens
            cached_tokens += whole.num_cached_tokens
            echo = plan.echo_texts[prompt_index] if plan.echo_texts else ""
            for choice in whole.outputs:
                completion_tokens += len(choice.token_ids)
                choices.append({"index": prompt_index * n + choice.index, "text": echo + choice.text,
                                "finish_reason": choice.finish_reason,
                                "logprobs": self._logprobs(plan, choice.logprobs, len(echo))[0]})
        build = chat_completion if plan.route == "chat" else text_completion
        return build(response_id, created, lora_name or self.spec.name, choices,
                     usage(prompt_tokens, completion_tokens, cached_tokens))

    async def _stream(self, plan: GenerationPlan, response_id: str, created: int,
                      lora_name: str | None) -> AsyncIterator[dict[str, Any]]:
        """The answer chunk by chunk; closing it early aborts the engine requests (see `_generate`)."""
        writer = ChunkWriter(plan.route, response_id, created, lora_name or self.spec.name,
                             include_usage=plan.include_usage)
        n = plan.params.n
        if plan.route == "chat":
            for index in range(plan.num_choices):
                yield writer.opening(index)
        text_offsets = [0] * plan.num_choices
        for prompt_index, echo in enumerate(plan.echo_texts or ()):
            for index in range(prompt_index * n, prompt_index * n + n):
                text_offsets[index] = len(echo)
                yield writer.delta(index, echo)
        prompt_tokens: dict[int, int] = {}
        cached_tokens: dict[int, int] = {}
        completion_tokens = 0
        async with aclosing(self._generate(plan, lora_name)) as outputs:
            async for prompt_index, output in outputs:
                prompt_tokens[prompt_index] = output.num_prompt_tokens
                cached_tokens[prompt_index] = max(cached_tokens.get(prompt_index, 0), output.num_cached_tokens)
                for choice in output.outputs:
                    index = prompt_index * n + choice.index
                    completion_tokens += len(choice.token_ids)
                    if choice.text or (plan.logprobs and choice.logprobs):
                        logprobs, text_offsets[index] = self._logprobs(plan, choice.logprobs, text_offsets[index])
                        yield writer.delta(index, choice.text, logprobs)
                    if choice.finish_reason is not None:
                        yield writer.finish(index, choice.finish_reason)
        if plan.include_usage:
            yield writer.usage(usage(sum(prompt_tokens.values()), completion_tokens, sum(cached_tokens.values())))

    def _logprobs(self, plan: GenerationPlan, logprobs: list[Any] | None, text_offset: int) -> tuple[Any, int]:
        """(the logprobs object of `plan.route`'s shape or None, the text offset after it)."""
        if not plan.logprobs:
            return None, text_offset
        assert self._strings is not None
        if plan.route == "chat":
            return chat_logprobs(logprobs or [], self._strings), text_offset
        return completion_logprobs(logprobs or [], self._strings, text_offset)

    async def _generate(self, plan: GenerationPlan, lora_name: str | None) -> AsyncIterator[tuple[int, RequestOutput]]:
        """(prompt index, step output) of every prompt's engine request, as they come.

        Whoever stops reading early closes this generator, which closes each engine stream and so
        aborts its request at the engine's next step: no tokens are generated for nobody.
        """
        engine = self._require_engine()
        if len(plan.prompts) == 1:
            async with aclosing(engine.generate(plan.prompts[0], plan.params, lora_name=lora_name)) as outputs:
                async for output in outputs:
                    yield 0, output
            return
        queue: asyncio.Queue[tuple[int, RequestOutput | BaseException | None]] = asyncio.Queue(_MAX_MERGED_OUTPUTS)

        async def pump(prompt_index: int, prompt: list[int]) -> None:
            try:
                async with aclosing(engine.generate(prompt, plan.params, lora_name=lora_name)) as outputs:
                    async for output in outputs:
                        await queue.put((prompt_index, output))
            except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
                await queue.put((prompt_index, exc))
                return
            await queue.put((prompt_index, None))

        tasks = [asyncio.ensure_future(pump(index, prompt)) for index, prompt in enumerate(plan.prompts)]
        try:
            finished = 0
            while finished < len(tasks):
                prompt_index, item = await queue.get()
                if item is None:
                    finished += 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield prompt_index, item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- LoRA adapters ---------------------------------------------------------------------

    async def load_lora_adapter(self, body: Any) -> dict[str, Any]:
        """`POST /v1/load_lora_adapter` {"lora_name", "lora_path"}, as vLLM's: register an adapter;
        the same name and folder again is a no-op."""
        name, path = _adapter_field(body, "lora_name"), _adapter_field(body, "lora_path")
        folder = await self._add_adapter(name, path)
        return {"object": "lora_adapter", "name": name, "path": str(folder),
                "message": f"Success: LoRA adapter '{name}' added successfully."}

    async def unload_lora_adapter(self, body: Any) -> dict[str, Any]:
        """`POST /v1/unload_lora_adapter` {"lora_name"}: unregister it (requests using it finish)."""
        name = _adapter_field(body, "lora_name")
        if not await self._require_engine().remove_lora(name):
            raise NotFoundError(f"no LoRA adapter named {name!r} is loaded on this replica; GET /v1/lora_adapters "
                                "lists those that are", code="lora_not_found")
        return {"object": "lora_adapter", "name": name,
                "message": f"Success: LoRA adapter '{name}' removed successfully."}

    def lora_adapters(self) -> list[dict[str, str]]:
        """The registered adapters as [{"name", "path"}], by name."""
        if self.engine is None:
            return []
        return [{"name": name, "path": str(folder)} for name, folder in self.engine.lora_folders().items()]

    async def ensure_lora_adapter(self, name: str, path: str) -> None:
        """Have adapter `name` registered from `path` (what the gateway's adapter headers ask):
        registered on first sight, registered again when its folder changed, else nothing to do."""
        engine = self._require_engine()
        current = engine.lora_folders().get(name)
        if current is not None and self._ensured.get(name) == (path, current):
            return
        folder = self._adapter_folder(path)
        if current is not None and current != folder:
            await engine.remove_lora(name)
        await self._add_adapter(name, path)
        self._ensured[name] = (path, folder)

    async def _add_adapter(self, name: str, path: str) -> Path:
        if name == self.spec.name:
            raise BadRequestError(f"an adapter cannot be named {name!r}, the base model's name on this replica; "
                                  "give it another name", param="lora_name")
        folder = self._adapter_folder(path)
        try:
            await self._require_engine().add_lora(name, folder)
        except LoraAdapterError as exc:
            raise BadRequestError(exc.message, param="lora_path", code=exc.code) from None
        return folder

    def _adapter_folder(self, path: str) -> Path:
        try:
            return resolve_weights(path, self.package_dir)
        except WeightsNotFoundError:
            raise BadRequestError(
                f"the LoRA adapter folder {path!r} does not exist on this replica's machine; give an absolute path, "
                "one relative to the package folder, or pkg:<python package>/<path>", param="lora_path",
                code="lora_not_found") from None

    # -- stats -----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """`engine_stats()`, the latency quantiles, and the cached block summary (module docstring)."""
        stats = self.engine_stats()
        if self.engine is None:
            return {**stats, "cached_block_hashes": [], "kv_block_size": self.spec.runtime.block_size}
        for name, quantiles in self.engine.latency_quantiles().items():
            stats[name] = quantiles
        for name, histogram in self.engine.latency_histograms().items():
            stats[name]["count"] = histogram.count
        stats["cached_block_hashes"] = self.engine.cached_block_hashes(self.config.max_cached_block_hashes)
        return stats

    def latency_histograms(self) -> Mapping[str, Any]:
        return {} if self.engine is None else self.engine.latency_histograms()

    def engine_stats(self) -> dict[str, Any]:
        if self.engine is None:
            return {"engine": "builtin", "engine_alive": False, "running": 0, "waiting": 0, "kv_usage": 0.0,
                    "prompt_tokens_total": self._prompt_tokens_total, "generation_tokens_total": 0}
        engine = self.engine.stats()
        total = engine["kv_blocks_total"]
        return {
            "engine": "builtin",
            "engine_alive": self.engine.is_running,
            "running": engine["running"],
            "waiting": engine["waiting"],
            "kv_usage": engine["kv_blocks_used"] / total if total else 0.0,
            "kv_blocks_used": engine["kv_blocks_used"],
            "kv_blocks_total": total,
            "kv_blocks_cached": engine["kv_blocks_cached"],
            "kv_block_size": engine["kv_block_size"],
            "prompt_tokens_total": self._prompt_tokens_total,
            "generation_tokens_total": engine["generated_tokens"],
            "prefix_cache_hit_tokens_total": engine["prefix_cache_hit_tokens"],
            "prefix_cache_query_tokens_total": engine["prefix_cache_queried_tokens"],
            "prefix_cache_hit_rate": engine["prefix_cache_hit_rate"],
            "spec_draft_tokens_total": engine["spec_draft_tokens"],
            "spec_accepted_tokens_total": engine["spec_accepted_tokens"],
            "spec_acceptance_rate": engine["spec_acceptance_rate"],
            "num_preemptions": engine["num_preemptions"],
            "max_model_len": engine["max_model_len"],
            "loras_registered": engine["loras_registered"],
            "loras_loaded": engine["loras_loaded"],
        }


async def _in_own_thread(function: Callable[[], T]) -> T:
    """`function()` in a new thread that ends when it returns."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():  # the caller was cancelled meanwhile
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result = function()
        except BaseException as exc:  # noqa: BLE001 - raised in the caller
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)
        finally:
            _return_freed_memory()

    threading.Thread(target=target, name="llm-load", daemon=True).start()
    return await done


def _return_freed_memory() -> None:
    """Hand memory freed by a finished thread back to the system. glibc keeps a thread's malloc
    arena after the thread ends, and nothing else allocates from it: after a GGUF conversion that
    kept the replica's RSS a few hundred megabytes above what it uses."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _adapter_field(body: Any, name: str) -> str:
    """A required string of a load/unload body, or a 400 naming it."""
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise BadRequestError(f"'{name}' must be a non-empty string", param=name)
    return value


__all__ = ["BuiltinLlmConfig", "BuiltinLlmRuntime"]
