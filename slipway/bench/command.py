"""`slipway bench serve` as a function of its command-line options.

The CLI passes its options straight through; this module turns them into a `BenchConfig`
(every invalid option reported at once), runs it, writes `--out`, and fails the command when
not one request succeeded, after showing why.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console

from slipway.bench.config import make_config, parse_goodput
from slipway.bench.report import BenchReport
from slipway.bench.runner import run_bench
from slipway.errors import UpstreamError

API_KEY_ENV = "SLIPWAY_API_KEY"


def bench_command(
    *,
    base_url: str = "http://127.0.0.1:8000",
    model: str | None = None,
    endpoint: str = "chat",
    api_key: str | None = None,
    dataset: str = "random",
    num_prompts: int = 100,
    input_len: int = 256,
    output_len: int = 128,
    range_ratio: float = 0.0,
    prefix_len: int = 0,
    num_conversations: int = 8,
    num_turns: int = 4,
    tokenizer: Path | None = None,
    trace: Path | None = None,
    trace_speedup: float = 1.0,
    trace_max_requests: int = 1000,
    trace_block_size: int = 512,
    max_total_len: int | None = 2048,
    arrival: str | None = None,
    request_rate: float = math.inf,
    burstiness: float = 1.0,
    max_concurrency: int | None = None,
    goodput: Sequence[str] = (),
    ignore_eos: bool = True,
    extra_body: dict[str, Any] | None = None,
    seed: int = 0,
    request_timeout_s: float = 600.0,
    out: Path | None = None,
    console: Console | None = None,
) -> BenchReport:
    """Run `slipway bench serve` with these options; see BenchConfig for what each one means.

    The API key defaults to $SLIPWAY_API_KEY. Raises SpecError for invalid options and
    UpstreamError when every request failed (after printing the report and writing `out`).
    """
    config = make_config(
        base_url=base_url, model=model, endpoint=endpoint, api_key=api_key or os.environ.get(API_KEY_ENV),
        dataset=dataset, num_prompts=num_prompts, input_len=input_len, output_len=output_len,
        range_ratio=range_ratio, prefix_len=prefix_len, num_conversations=num_conversations, num_turns=num_turns,
        tokenizer=tokenizer, trace=trace, trace_speedup=trace_speedup, trace_max_requests=trace_max_requests,
        trace_block_size=trace_block_size, max_total_len=max_total_len, arrival=arrival,
        request_rate=request_rate, burstiness=burstiness, max_concurrency=max_concurrency,
        goodput=parse_goodput(goodput), ignore_eos=ignore_eos, extra_body=extra_body or {}, seed=seed,
        request_timeout_s=request_timeout_s,
    )
    report = run_bench(config, console)
    if out is not None:
        path = report.write_json(out)
        if console is not None:
            console.print(f"[green]Wrote[/] {path}")
    summary = report.summary
    if summary.completed == 0 and summary.failed > 0:
        first = summary.errors[0].message if summary.errors else "unknown error"
        raise UpstreamError(f"all {summary.failed} requests failed (first error: {first}); "
                            f"check that {config.url} serves model {report.model!r} and the API key")
    return report
