"""Multi-LoRA serving in the built-in engine, in process: the base alone vs many adapters in one batch.

    python benchmarks/lora.py [--model DIR] [--concurrency 16] [--requests 32] [--prompt-tokens 256]
                              [--output-tokens 128] [--adapters 8] [--rank 16] [--repeat 2] [--threads 2]
    python benchmarks/lora.py --kernels      the LoRA products alone: grouped vs stacked (lora/batch.py)

Builds the engine on SmolLM2-135M-Instruct in bfloat16 as benchmarks/engine_step.py does, writes
--adapters random rank --rank PEFT adapters on all seven projections (q, k, v, o, gate, up, down)
into a temporary folder and registers them. Then, alternately (the best of --repeat each, so a
loaded machine hurts both alike), runs a closed loop of --concurrency streams over --requests
requests with random prompts, each yielding exactly --output-tokens (EOS ignored):

    base   every request on the base model
    lora   requests spread round-robin over the adapters, so every batch mixes all of them

and prints the output tokens/s of both and their ratio, in wall time and per CPU-second (what the
process got done per second it actually ran: steadier when other work shares the cores).

--kernels times one step's worth of LoRA products (every layer's four fused projections) on
the same shapes: decode rows 1-16 whose adapters form 1 to 8 runs, and single-adapter prefill
chunks, computed grouped (per run) and stacked (all adapters at once, masked).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from engine_step import EXAMPLE_RUNTIME, rss_mib, smollm2_folder  # noqa: E402

from slipway.engine import EngineConfig, LLMEngine, SamplingParams  # noqa: E402
from slipway.engine.lora import LoraBatch, LoraStack, inspect_adapter, load_fused_weights  # noqa: E402
from slipway.engine.lora import batch as lora_batch  # noqa: E402
from slipway.engine.lora.adapter import SUPPORTED_TARGETS, in_features, part_slices  # noqa: E402
from slipway.engine.models.config import ModelConfig  # noqa: E402
from slipway.engine.models.packed import can_pack  # noqa: E402


def write_random_adapter(folder: Path, config: ModelConfig, rank: int, seed: int) -> None:
    """A PEFT LoRA folder (adapter_config.json + adapter_model.safetensors) with random A and B on
    every projection of every layer, as PEFT's save_pretrained lays it out."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(config.num_layers):
        for module in SUPPORTED_TARGETS:
            block = "self_attn" if module in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            prefix = f"base_model.model.model.layers.{layer}.{block}.{module}"
            fan_in, fan_out = in_features(config, module), part_slices(config)[module][2]
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, fan_in, generator=generator) / fan_in ** 0.5
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(fan_out, rank, generator=generator) * 0.01
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(SUPPORTED_TARGETS),
        "bias": "none", "use_rslora": False, "use_dora": False}))


def run_closed_loop(engine: LLMEngine, concurrency: int, num_requests: int, prompt_tokens: int,
                    output_tokens: int, adapters: list[str | None], seed: int) -> tuple[float, float, int]:
    """(seconds, CPU seconds, output tokens) of num_requests requests, concurrency at a time,
    request i on adapters[i % len(adapters)]."""
    generator = torch.Generator().manual_seed(seed)
    vocab = engine.model_config.vocab_size
    params = SamplingParams(temperature=0.0, max_tokens=output_tokens, ignore_eos=True)
    prompts = [torch.randint(3, vocab, (prompt_tokens,), generator=generator).tolist() for _ in range(num_requests)]
    next_prompt = produced = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    while next_prompt < num_requests or engine.has_unfinished_requests():
        while next_prompt < num_requests and engine.stats()["requests"] < concurrency:
            engine.add_request(f"bench-{seed}-{next_prompt}", prompts[next_prompt], params,
                               lora_name=adapters[next_prompt % len(adapters)])
            next_prompt += 1
        for output in engine.step():
            produced += sum(len(choice.token_ids) for choice in output.outputs)
    return time.perf_counter() - started, time.process_time() - cpu_started, produced


def serve(args: argparse.Namespace, folder: Path, adapter_root: Path) -> None:
    config = EngineConfig.from_runtime_settings(EXAMPLE_RUNTIME, dtype="bfloat16", device="cpu",
                                                max_loras=max(1, args.adapters))
    started = time.perf_counter()
    engine = LLMEngine(folder, config)
    names = [f"adapter-{i}" for i in range(args.adapters)]
    for index, name in enumerate(names):
        write_random_adapter(adapter_root / name, engine.model_config, args.rank, seed=index)
        engine.add_lora(name, adapter_root / name)
    print(f"engine built in {time.perf_counter() - started:.1f} s: {folder}, bfloat16, {args.threads} threads, "
          f"{args.adapters} adapters of rank {args.rank} on {', '.join(SUPPORTED_TARGETS)}", flush=True)

    workloads: dict[str, list[str | None]] = {"base": [None], "lora": list(names) or [None]}
    for label, adapters in workloads.items():  # warm-up: loads the adapters, warms oneDNN's caches
        run_closed_loop(engine, args.concurrency, args.concurrency, 32, 4, adapters, seed=10_000)
    wall: dict[str, list[float]] = {label: [] for label in workloads}
    cpu: dict[str, list[float]] = {label: [] for label in workloads}
    for attempt in range(args.repeat):
        for label, adapters in workloads.items():
            seconds, cpu_seconds, produced = run_closed_loop(engine, args.concurrency, args.requests,
                                                             args.prompt_tokens, args.output_tokens, adapters,
                                                             seed=attempt)
            wall[label].append(produced / seconds)
            cpu[label].append(produced / cpu_seconds)
            print(f"  run {attempt + 1} {label:4s} {produced / seconds:7.1f} tok/s, "
                  f"{produced / cpu_seconds:7.1f} tok per CPU-s ({produced} tokens, {seconds:.1f} s)", flush=True)
    for label, adapters in workloads.items():
        name = "base alone" if label == "base" else f"{args.adapters} adapters mixed"
        print(f"{name:17s} {max(wall[label]):7.1f} output tok/s, {max(cpu[label]):7.1f} per CPU-s "
              f"(best of {args.repeat})")
    print(f"ratio: {max(wall['lora']) / max(wall['base']):.2f}x the base in wall time, "
          f"{max(cpu['lora']) / max(cpu['base']):.2f}x per CPU-s (loaded: {engine.stats()['loras_loaded']}); "
          f"RSS {rss_mib():.0f} MiB", flush=True)


def time_step(batch: LoraBatch, layers: int, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor],
              repeat: int) -> float:
    """Milliseconds of one step's LoRA work: every layer's four products (best of `repeat`)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for index in range(layers):
            layer = batch.layer(index)
            if layer is None:
                continue
            for name, x in inputs.items():
                layer.apply(name, x, outputs[name])
        best = min(best, time.perf_counter() - started)
    return best * 1000


def kernels(args: argparse.Namespace, folder: Path, adapter_root: Path) -> None:
    config = ModelConfig.from_folder(folder)
    pack = can_pack(torch.device("cpu"), torch.bfloat16)
    weights = {}
    for slot in range(args.adapters):
        write_random_adapter(adapter_root / f"k{slot}", config, args.rank, seed=slot)
        adapter = inspect_adapter(f"k{slot}", adapter_root / f"k{slot}", config, max_lora_rank=None)
        weights[slot] = load_fused_weights(adapter, config, dtype=torch.bfloat16, device="cpu")
    stack = LoraStack.build(weights, pack=pack)
    q_size, kv_size = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    widths = {"qkv_proj": (config.hidden_size, q_size + 2 * kv_size), "o_proj": (q_size, config.hidden_size),
              "gate_up_proj": (config.hidden_size, 2 * config.intermediate_size),
              "down_proj": (config.intermediate_size, config.hidden_size)}

    def measure(rows: int, spans: list[tuple[int, int, int]], max_grouped_runs: int) -> float:
        inputs = {name: torch.randn(rows, fan_in).bfloat16() for name, (fan_in, _) in widths.items()}
        outputs = {name: torch.randn(rows, fan_out).bfloat16() for name, (_, fan_out) in widths.items()}
        batch = LoraBatch(stack, spans, max_grouped_runs=max_grouped_runs)
        time_step(batch, config.num_layers, inputs, outputs, 2)
        return time_step(batch, config.num_layers, inputs, outputs, args.kernel_repeat)

    print(f"one step's LoRA products over {config.num_layers} layers x 4 projections, bfloat16, "
          f"{args.adapters} adapters of rank {args.rank} loaded, packed={pack}; ms (best of {args.kernel_repeat})")
    print("decode rows  runs   grouped  stacked")
    for rows in (1, 4, 8, 16):
        for runs in (1, 2, 4, 8):
            if runs > rows or runs > args.adapters:
                continue
            spans = [(row, 1, row * runs // rows) for row in range(rows)]  # rows sorted by slot
            print(f"{rows:11d} {runs:5d} {measure(rows, spans, 10_000):9.2f} {measure(rows, spans, 0):8.2f}",
                  flush=True)
    print("prefill rows (one adapter)   grouped  stacked")
    saved = lora_batch.MAX_STACKED_SPAN
    for rows in (16, 64, 256, 512):
        lora_batch.MAX_STACKED_SPAN = rows  # lets the stacked way take the span
        stacked = measure(rows, [(0, rows, 0)], 0)
        lora_batch.MAX_STACKED_SPAN = saved
        print(f"{rows:26d} {measure(rows, [(0, rows, 0)], 10_000):9.2f} {stacked:8.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="Hugging Face folder (default: converted SmolLM2)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=32, help="requests per run (spread over the streams)")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each workload, alternated; the best counts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kernels", action="store_true", help="time the LoRA products alone instead")
    parser.add_argument("--kernel-repeat", type=int, default=20)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    folder = args.model or smollm2_folder()
    with tempfile.TemporaryDirectory(prefix="slipway-lora-bench-") as root:
        (kernels if args.kernels else serve)(args, folder, Path(root))


if __name__ == "__main__":
    main()
