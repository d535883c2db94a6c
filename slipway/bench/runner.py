"""Running a benchmark: build the requests, release them on schedule, gather the records.

    BenchConfig -> requests (datasets) + release offsets (arrivals)
        -> one task per request, created at its release time:
               wait for the earlier turn of its chat (multi-turn)
               wait for a slot (max_concurrency)
               send and time it (client)
        -> records -> summary (metrics) -> BenchReport

One aiohttp session holds a connection pool sized to the concurrency, so a request never waits
inside the client for a connection the arrival process did not mean it to wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime, timezone

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from slipway.bench.arrivals import rate_offsets, trace_offsets
from slipway.bench.client import Target, first_model, send_request
from slipway.bench.config import BenchConfig
from slipway.bench.datasets import BenchRequest, build_requests
from slipway.bench.metrics import summarize
from slipway.bench.record import RequestRecord
from slipway.bench.report import BenchReport, render_report
from slipway.bench.text import TextMaker
from slipway.bench.traces import load_trace

# Response lines longer than this would make aiohttp fail; SSE chunks are far smaller.
_READ_BUFFER_BYTES = 1024 * 1024


def run_bench(config: BenchConfig, console: Console | None = None) -> BenchReport:
    """Run the benchmark `config` describes, show progress and the result tables on `console`
    (nothing shown when None), and return the report."""
    report = _run(benchmark(config, console=console))
    if console is not None:
        render_report(report, console)
    return report


def plan(config: BenchConfig) -> tuple[list[BenchRequest], list[float]]:
    """The requests of a run and the release offset (seconds) of each, in release order."""
    trace = load_trace(config.trace, max_requests=config.trace_max_requests) if config.trace else None
    count = len(trace) if trace is not None and config.arrival == "trace" else None
    requests = build_requests(config, TextMaker.from_folder(config.tokenizer), trace, count)
    if config.arrival == "trace":
        offsets = trace_offsets(trace, config.trace_speedup)
    else:
        offsets = rate_offsets(len(requests), config.request_rate, config.burstiness, seed=config.seed)
    # A multi-turn dataset replayed on a shorter trace sends only as many requests as it has rows.
    size = min(len(requests), len(offsets))
    return requests[:size], offsets[:size]


async def benchmark(config: BenchConfig, *, console: Console | None = None) -> BenchReport:
    """Run the benchmark in the current event loop and return its report (no tables printed)."""
    requests, offsets = plan(config)
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s, sock_connect=config.connect_timeout_s,
                                    sock_read=config.read_timeout_s)
    # limit=0 is aiohttp's "no limit": without a concurrency cap every released request is sent at once.
    connector = aiohttp.TCPConnector(limit=config.max_concurrency or 0, limit_per_host=0, ttl_dns_cache=300)
    started_at = datetime.now(timezone.utc)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, read_bufsize=_READ_BUFFER_BYTES,
                                     trust_env=False) as session:
        model = config.model or await first_model(session, config)
        target = Target.from_config(config, model)
        with _progress(console, len(requests)) as advance:
            records, duration_s = await _dispatch(session, target, requests, offsets, config.max_concurrency, advance)
    return BenchReport(
        config=config,
        model=model,
        started_at=started_at,
        summary=summarize(records, duration_s, config.goodput),
        records=records,
    )


async def _dispatch(session: aiohttp.ClientSession, target: Target, requests: list[BenchRequest],
                    offsets: list[float], max_concurrency: int | None, advance) -> tuple[list[RequestRecord], float]:
    """Release each request at its offset and gather the records, ordered by request index."""
    slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    finished = {request.index: asyncio.Event() for request in requests}
    origin = time.perf_counter()

    async def run_one(request: BenchRequest, released_at: float) -> RequestRecord:
        try:
            if request.after is not None and request.after in finished:
                await finished[request.after].wait()
            async with slots or contextlib.nullcontext():
                return await send_request(session, target, request, origin=origin, released_at=released_at)
        finally:
            finished[request.index].set()
            advance()

    tasks = []
    for request, offset in sorted(zip(requests, offsets, strict=True), key=lambda pair: pair[1]):
        delay = origin + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(run_one(request, time.perf_counter())))
    try:
        records = await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    duration_s = time.perf_counter() - origin
    return sorted(records, key=lambda record: record.index), duration_s


@contextlib.contextmanager
def _progress(console: Console | None, total: int):
    """A Rich progress bar of completed requests; yields the function that advances it."""
    if console is None:
        yield lambda: None
        return
    columns = (SpinnerColumn(), TextColumn("requests"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("requests", total=total)
        yield lambda: progress.advance(task)


def _run(coroutine):
    """asyncio.run on uvloop when it is installed (a faster client loop), else the default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)
