"""The load generator behind `slipway bench serve`, for any OpenAI-compatible server.

    config.py    BenchConfig: target, dataset, arrivals, SLOs; parse_goodput
    text.py      synthetic prompt text of a token length (exact with a tokenizer folder)
    traces.py    Azure CSV and Mooncake JSONL traces -> TraceRow
    datasets.py  random, multi-turn (shared prefixes) and trace-shaped requests
    arrivals.py  release times: Poisson/gamma at a rate, or a trace's timestamps (pure)
    sse.py       incremental server-sent events decoding
    client.py    one streamed request, timed -> RequestRecord (failures recorded, never raised)
    metrics.py   records -> BenchSummary: percentiles, throughputs, goodput (pure)
    report.py    BenchReport as JSON and Rich tables
    runner.py    run_bench / benchmark: dispatch on schedule under a concurrency cap
    command.py   bench_command: the CLI's options -> a run, --out written
"""

from slipway.bench.command import bench_command
from slipway.bench.config import BenchConfig, make_config, parse_goodput
from slipway.bench.metrics import BenchSummary, Distribution
from slipway.bench.record import RequestRecord
from slipway.bench.report import BenchReport, render_report
from slipway.bench.runner import benchmark, run_bench

__all__ = [
    "BenchConfig", "BenchReport", "BenchSummary", "Distribution", "RequestRecord",
    "bench_command", "benchmark", "make_config", "parse_goodput", "render_report", "run_bench",
]
