"""`EngineConfig`: every knob of the built-in engine, typed, bounded and described."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from slipway.spec.package import RuntimeSettings, parse_memory


class SpeculativeConfig(BaseModel):
    """Prompt-lookup (n-gram) speculative decoding for greedy requests."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["ngram"] = Field("ngram", description="Where drafts come from: n-gram lookup in the sequence.")
    num_speculative_tokens: int = Field(4, ge=1, le=16, description="Most draft tokens verified per sequence per step.")
    prompt_lookup_min: int = Field(1, ge=1, description="Shortest tail (in tokens) searched for an earlier match.")
    prompt_lookup_max: int = Field(3, ge=1, description="Longest tail (in tokens) searched for an earlier match.")

    @model_validator(mode="after")
    def _ngram_bounds(self) -> "SpeculativeConfig":
        if self.prompt_lookup_min > self.prompt_lookup_max:
            raise ValueError(
                f"prompt_lookup_min ({self.prompt_lookup_min}) exceeds prompt_lookup_max ({self.prompt_lookup_max}); "
                "lower the first or raise the second"
            )
        return self


class EngineConfig(BaseModel):
    """Settings of one engine instance (one model on one device)."""

    model_config = ConfigDict(extra="forbid")

    max_model_len: int | None = Field(
        None, ge=2, description="Longest prompt plus completion in tokens; None: the model's limit, at most 4096."
    )
    max_num_seqs: int = Field(64, ge=1, le=4096, description="Most sequences in one step's batch.")
    max_num_batched_tokens: int = Field(
        512, ge=1, description="Token budget of one step: decodes, drafts and prefill chunks together."
    )
    enable_chunked_prefill: bool = Field(
        True, description="Split long prompts across steps so decodes keep flowing beside them."
    )
    short_prefill_tokens: int = Field(
        0, ge=0, description=(
            "Short prompts first: a prompt with at most this many tokens left to compute (after its cached "
            "prefix) is short. In a step shared with other sequences, a longer prompt prefills at most this many "
            "tokens, and sits out the step (at most 4 in a row) while a short one is ready, so cache hits and brief "
            "prompts get their first token without waiting behind long prompts. 0: prompts are served by arrival, "
            "each taking what budget is left. Needs chunked prefill."
        ),
    )
    block_size: int = Field(16, ge=1, le=1024, description="Tokens per KV-cache block.")
    num_kv_blocks: int | None = Field(
        None, ge=1, description="KV-cache blocks to allocate; None derives it from kv_cache_memory."
    )
    kv_cache_memory: int = Field(
        256 * 2**20, ge=1, description="Bytes for the KV cache when num_kv_blocks is None (accepts '512Mi', '2Gi')."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weight and KV-cache precision; auto is bfloat16 (attention math in the same precision, float32 for float16 on CPU)."
    )
    device: str = Field("auto", description="'cpu', 'cuda', 'cuda:N', or auto (cuda when available).")
    enable_prefix_caching: bool = Field(True, description="Reuse KV blocks of prompts that share a prefix.")
    speculative: SpeculativeConfig | None = Field(None, description="Speculative decoding; None turns it off.")
    max_waiting_requests: int = Field(
        1024, ge=1, description="Requests that may wait beyond max_num_seqs before new ones are refused."
    )
    seed: int = Field(0, description="Seed of the randomness shared by requests that bring no seed of their own.")
    cpu_attention_kernel: bool = Field(
        True,
        description=(
            "On CPU, attend with slipway's C kernels, which read KV blocks where they lie, and run a bfloat16 "
            "model's norms, rotary embeddings, cache writes and activations fused (built once per machine with its "
            "C compiler and cached under $SLIPWAY_HOME/kernels). False, or no compiler: PyTorch's operators, with "
            "the same results to bfloat16 rounding, slower."
        ),
    )
    compile: bool = Field(
        False,
        description=(
            "Compile the decode step with torch.compile (inductor): on CPU about a third less time per decode "
            "step than eager. Needs a C++ compiler; the compile takes minutes on 2 cores with a cold inductor "
            "cache (logged with its duration)."
        ),
    )
    compile_in_background: bool = Field(
        True,
        description=(
            "With compile on: compile in a background thread while the engine already serves eagerly, and "
            "switch decode steps to the compiled graph once it is ready, so start-up does not wait for it "
            "(steps are slower while it compiles). False: the engine is not built until the compile ends."
        ),
    )
    max_loras: int = Field(
        8, ge=1, le=256,
        description=(
            "LoRA adapters whose weights are loaded at once (any number may be registered): requests for "
            "another adapter wait until one of these is used by no running request, which is then evicted "
            "(least recently used first)."
        ),
    )
    max_lora_rank: int = Field(
        64, ge=1, le=4096, description="Largest rank r of an adapter this engine accepts; a larger one is refused."
    )
    merge_adapter: str | None = Field(
        None,
        description=(
            "A PEFT LoRA folder folded into the base weights at load (W += scaling * B @ A): the engine then "
            "serves the merged model as its base, at the base's speed. None serves the base as it is."
        ),
    )

    @field_validator("kv_cache_memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> int:
        return parse_memory(value)

    @model_validator(mode="after")
    def _budget_fits(self) -> "EngineConfig":
        if not self.enable_chunked_prefill and self.max_model_len and self.max_num_batched_tokens < self.max_model_len:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) is below max_model_len ({self.max_model_len}) "
                "with chunked prefill off, so long prompts could never run; raise it or enable_chunked_prefill"
            )
        if self.short_prefill_tokens and not self.enable_chunked_prefill:
            raise ValueError(
                f"short_prefill_tokens ({self.short_prefill_tokens}) needs chunked prefill, which is off: long "
                "prompts could not give way to short ones; set enable_chunked_prefill or short_prefill_tokens: 0"
            )
        return self

    @classmethod
    def from_runtime_settings(cls, runtime: RuntimeSettings, **overrides: Any) -> "EngineConfig":
        """The engine settings a package's `runtime:` section implies, plus explicit overrides."""
        values: dict[str, Any] = {
            "max_model_len": runtime.max_model_len,
            "max_num_seqs": runtime.max_num_seqs,
            "block_size": runtime.block_size,
            "dtype": runtime.dtype,
        }
        values.update(overrides)
        return cls(**values)
