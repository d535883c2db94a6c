"""Routing policies on real replicas: prefix-cache hits, TTFT, throughput and balance on multi-turn chats
shaped by the Mooncake conversation trace.

    python benchmarks/routing.py [--requests 150] [--concurrency 6] [--block-tokens 16] [--max-output 16]
                                 [--short-prefill-tokens 128] [--repeat 2]
                                 [--policies round_robin least_load prefix_aware kv_aware] [--out PATH]

What runs (all on 127.0.0.1):

    reference   ONE examples/smollm2 replica with a KV cache large enough never to evict
                (--reference-kv-memory), the workload sent to it directly: its hit rate is the ceiling
    per policy  3 fresh examples/smollm2 replicas (cold caches; one engine thread each, OMP_NUM_THREADS=1)
                behind one `python -m slipway.gateway` over a fixed routing snapshot naming the policy;
                the workload sent through the gateway

The workload (../shared/data/traces/mooncake-conversation.jsonl): each row's `hash_ids` name the
512-token blocks of its prompt, equal ids for equal blocks. Rows are grouped into conversations (a
row continues the earlier row with which it shares the longest run of 2 or more leading blocks);
the first conversations of 2 or more turns in the trace's first --window rows are kept, at most
--max-turns turns each, until --requests rows. Each hash id becomes a fixed pseudo-random chunk of
--block-tokens SmolLM2 tokens (so equal ids are equal text), each prompt is cut to the row's input
length scaled the same way (and to --max-prompt-tokens), and each output is the row's output
length scaled the same way, capped at --max-output (sent with ignore_eos, so exactly that many).
Arrivals: the rows in trace order under a closed loop of --concurrency, each turn sent only once
the turn it continues has been answered (a user waits for the answer before writing again).

Every replica, the reference's included, runs with the engine's `short_prefill_tokens` at
--short-prefill-tokens (128): a prompt with little left to compute after its cached prefix (a
follow-up turn whose history is cached) goes before long prompts, as a deployment that routes by
cache would configure its replicas (`SLIPWAY_LLM_SHORT_PREFILL_TOKENS` under `runtime.env`). Every
policy gets the same replicas, so the comparison stays like for like; 0 serves prompts by arrival.

Each policy runs the workload --repeat times (2), each time on fresh replicas and a fresh
gateway, and its figures pool the runs: prefix-cache hit rate (sum over replicas and runs of the
/stats deltas of prefix_cache_hit_tokens_total / prefix_cache_query_tokens_total), TTFT p50/p99
and throughput over every request of every run (from `slipway.bench`: streamed requests, timed at
the client), and the requests each replica served, of the run with the worst max/min (replicas of
different runs are different replicas, so their loads are never summed). One run of 150 requests
is a small sample: round_robin's hit rate alone moves between 0.23 and 0.35 from run to run with
the order in which the closed loop happens to send turns. The reference runs once. Printed as a
Markdown table, with each policy's hit rate as a ratio to the reference's; written as JSON to
--out (per-run figures and per-request TTFTs included, follow-up turns marked). The default run
takes about 10 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from slipway.bench.client import Target, send_request
from slipway.bench.config import BenchConfig
from slipway.bench.datasets import BenchRequest
from slipway.bench.metrics import BenchSummary, summarize
from slipway.bench.record import RequestRecord
from slipway.bench.text import TextMaker
from slipway.bench.traces import MOONCAKE_BLOCK_TOKENS, TraceRow, load_trace
from slipway.spec.snapshot import DeploymentEntry, KeyEntry, ModelEntry, ReplicaEntry, RoutingSnapshot

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "examples" / "smollm2"
TRACE = REPO.parent / "shared" / "data" / "traces" / "mooncake-conversation.jsonl"
POLICIES = ("round_robin", "least_load", "prefix_aware", "kv_aware")
MODEL = "smollm2"
KEY = "sk-slw-" + "r" * 40
console = Console()


# -- the workload ------------------------------------------------------------------------------------


@dataclass
class Turn:
    """One selected trace row: its place in the trace and the row it continues (None: a first turn)."""

    row: TraceRow
    trace_index: int
    parent: int | None


def conversations(rows: list[TraceRow]) -> list[list[Turn]]:
    """Rows grouped into conversations, in order of their first turn; turns in trace order."""
    owner: dict[tuple[int, ...], int] = {}  # a prefix of 2+ blocks -> the latest row that had it
    conversation_of: dict[int, int] = {}
    grouped: dict[int, list[Turn]] = {}
    for index, row in enumerate(rows):
        ids = row.hash_ids
        parent = next((owner[ids[:k]] for k in range(len(ids), 1, -1) if ids[:k] in owner), None)
        for k in range(2, len(ids) + 1):
            owner[ids[:k]] = index
        conversation_of[index] = conversation_of[parent] if parent is not None else index
        grouped.setdefault(conversation_of[index], []).append(Turn(row, index, parent))
    return list(grouped.values())


def select_turns(rows: list[TraceRow], requests: int, max_turns: int) -> list[Turn]:
    """The first multi-turn conversations (at most `max_turns` turns each) until `requests` rows, in trace order."""
    chosen: list[Turn] = []
    for turns in conversations(rows):
        turns = turns[:max_turns]
        if len(turns) < 2:
            continue
        chosen += turns[:requests - len(chosen)]
        if len(chosen) >= requests:
            break
    return sorted(chosen, key=lambda turn: turn.trace_index)


def build_requests(turns: list[Turn], text: TextMaker, args: argparse.Namespace) -> list[BenchRequest]:
    """Chat requests whose text follows the rows' hash ids, lengths scaled by block_tokens / 512."""
    scale = args.block_tokens / MOONCAKE_BLOCK_TOKENS
    position = {turn.trace_index: index for index, turn in enumerate(turns)}
    requests = []
    for index, turn in enumerate(turns):
        pieces: list = []
        for hash_id in turn.row.hash_ids:
            pieces += text.pieces(f"block-{hash_id}", args.block_tokens)
        input_len = min(max(1, round(turn.row.input_tokens * scale)), args.max_prompt_tokens, len(pieces))
        output_len = min(args.max_output, max(1, round(turn.row.output_tokens * scale)))
        parent = position.get(turn.parent) if turn.parent is not None else None
        content = text.render(pieces[:input_len])
        requests.append(BenchRequest(index=index, messages=[{"role": "user", "content": content}],
                                     input_tokens=input_len, output_tokens=output_len, after=parent))
    return requests


# -- processes -------------------------------------------------------------------------------------------


def spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
                                 "TOKENIZERS_PARALLELISM": "false", **env})


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def wait_url(url: str, process: subprocess.Popen, port_file: Path, log: Path, timeout: float = 300) -> str:
    """The process's base URL once `url` (a path) answers 200."""
    deadline = time.monotonic() + timeout
    base = None
    while True:
        if base is None and port_file.exists() and port_file.read_text().strip():
            base = f"http://127.0.0.1:{int(port_file.read_text())}"
        if base is not None:
            try:
                if httpx.get(base + url, timeout=5).status_code == 200:
                    return base
            except httpx.TransportError:
                pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.args[:4]} did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


@dataclass
class Fleet:
    """Replica processes (and a gateway in front of them, when routed)."""

    replicas: list[tuple[str, str, subprocess.Popen]] = field(default_factory=list)  # (id, url, process)
    gateway: tuple[str, subprocess.Popen] | None = None

    def stop(self) -> None:
        processes = [p for _, _, p in self.replicas] + ([self.gateway[1]] if self.gateway else [])
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            stop(process)


def start_replicas(work: Path, name: str, count: int, env: dict[str, str]) -> Fleet:
    fleet = Fleet()
    started = []
    for i in range(count):
        replica_id = f"{name}-r{i}"
        port_file, log = work / f"{replica_id}.port", work / f"{replica_id}.log"
        port_file.unlink(missing_ok=True)
        process = spawn([sys.executable, "-m", "slipway.server", "--package", str(PACKAGE), "--port", "0",
                         "--port-file", str(port_file), "--replica-id", replica_id], log, env)
        started.append((replica_id, port_file, log, process))
    try:
        for replica_id, port_file, log, process in started:
            fleet.replicas.append((replica_id, wait_url("/health/ready", process, port_file, log), process))
    except BaseException:
        for *_, process in started:
            stop(process)
        raise
    return fleet


def start_gateway(work: Path, policy: str, fleet: Fleet, name: str) -> None:
    replicas = [ReplicaEntry(replica_id=replica_id, url=url) for replica_id, url, _ in fleet.replicas]
    snapshot = RoutingSnapshot(
        version=1,
        keys=[KeyEntry(key_id="k-bench", key_hash=hashlib.sha256(KEY.encode()).hexdigest(), workspace_id="ws",
                       scopes=["invoke"])],
        models=[ModelEntry(workspace_id="ws", name=MODEL, environments={"production": "d-bench"})],
        deployments=[DeploymentEntry(deployment_id="d-bench", model_name=MODEL, number=1, kind="llm",
                                     status="active", workspace_id="ws", routing=policy,
                                     replicas=replicas)],
    )
    snapshot_file, port_file, log = work / f"{name}.snapshot.json", work / f"{name}.gateway.port", \
        work / f"{name}.gateway.log"
    snapshot_file.write_text(snapshot.model_dump_json())
    port_file.unlink(missing_ok=True)
    process = spawn([sys.executable, "-m", "slipway.gateway", "--snapshot-file", str(snapshot_file), "--home",
                     str(work / f"{name}-home"), "--port", "0", "--port-file", str(port_file), "--log-level", "info"],
                    log, {})
    fleet.gateway = (wait_url("/health", process, port_file, log), process)
    if policy == "kv_aware":
        # A gateway that has been running a while holds the deployment's tokenizer; measure that, not
        # the first seconds in which it is still fetching and building it (requests go by load meanwhile).
        deadline = time.monotonic() + 300
        while b"tokenizer of kv_aware deployment d-bench ready" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway never built the tokenizer:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)


def replica_stats(fleet: Fleet) -> dict[str, dict]:
    return {rid: httpx.get(f"{url}/stats", timeout=30).json() for rid, url, _ in fleet.replicas}


def fetch_tokenizer(url: str, folder: Path) -> TextMaker:
    """The replica's own tokenizer (GET /tokenizer), so prompt lengths are exact SmolLM2 token counts."""
    answer = httpx.get(f"{url}/tokenizer", timeout=60).json()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(answer["files"]["tokenizer.json"])
    return TextMaker.from_folder(folder)


# -- one run ------------------------------------------------------------------------------------------------


async def drive(base_url: str, requests: list[BenchRequest], concurrency: int,
                label: str) -> tuple[list[RequestRecord], float]:
    """Send every request (closed loop of `concurrency`, each after the turn it continues), timing each."""
    config = BenchConfig(base_url=base_url, endpoint="chat", model=MODEL, api_key=KEY, request_timeout_s=1200,
                         read_timeout_s=600)
    target = Target.from_config(config, MODEL)
    slots = asyncio.Semaphore(concurrency)
    finished = {request.index: asyncio.Event() for request in requests}
    columns = (SpinnerColumn(), TextColumn(f"{label:<13}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s, sock_read=config.read_timeout_s)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout,
                                     trust_env=False) as session:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(label, total=len(requests))
            origin = time.perf_counter()

            async def one(request: BenchRequest) -> RequestRecord:
                try:
                    if request.after is not None:
                        await finished[request.after].wait()
                    async with slots:
                        return await send_request(session, target, request, origin=origin,
                                                  released_at=time.perf_counter())
                finally:
                    finished[request.index].set()
                    progress.advance(task)

            records = await asyncio.gather(*(one(request) for request in requests))
            duration = time.perf_counter() - origin
    return list(records), duration


@dataclass
class Run:
    """One pass of the workload through one fleet: what the replicas counted and what the client timed."""

    records: list[RequestRecord]
    duration: float
    hit_tokens: int
    queried_tokens: int
    served: dict[str, int]
    cache_tokens: int
    num_preemptions: int


def measure_run(label: str, fleet: Fleet, base_url: str, requests: list[BenchRequest], concurrency: int) -> Run:
    before = replica_stats(fleet)
    records, duration = asyncio.run(drive(base_url, requests, concurrency, label))
    after = replica_stats(fleet)
    hits = sum(after[r]["prefix_cache_hit_tokens_total"] - before[r]["prefix_cache_hit_tokens_total"] for r in after)
    queried = sum(after[r]["prefix_cache_query_tokens_total"] - before[r]["prefix_cache_query_tokens_total"]
                  for r in after)
    return Run(records=records, duration=duration, hit_tokens=hits, queried_tokens=queried,
               served={r: after[r]["requests_total"] - before[r]["requests_total"] for r in after},
               cache_tokens=sum(after[r]["kv_blocks_total"] * after[r]["kv_block_size"] for r in after),
               num_preemptions=sum(after[r].get("num_preemptions", 0) - before[r].get("num_preemptions", 0)
                                   for r in after))


def pooled(name: str, runs: list[Run], requests: list[BenchRequest]) -> dict:
    """One policy's result over its runs: hit rate and timings over every request of every run, as one
    sample; balance as the worst run's (each run has fresh replicas, so their loads do not add up)."""
    records = [record for run in runs for record in run.records]
    summary: BenchSummary = summarize(records, sum(run.duration for run in runs))
    if summary.failed:
        console.print(f"[red]{name}: {summary.failed} requests failed[/]: {summary.errors[:3]}")
    hits, queried = sum(run.hit_tokens for run in runs), sum(run.queried_tokens for run in runs)
    balances = [max(run.served.values()) / min(run.served.values()) if min(run.served.values()) else float("inf")
                for run in runs]
    worst = balances.index(max(balances))
    return {
        "name": name, "runs": len(runs), "hit_rate": hits / queried if queried else 0.0, "hit_tokens": hits,
        "queried_tokens": queried,
        "ttft_p50_ms": summary.ttft_ms.p50 if summary.ttft_ms else None,
        "ttft_p99_ms": summary.ttft_ms.p99 if summary.ttft_ms else None,
        "request_throughput": summary.request_throughput, "output_throughput": summary.output_throughput,
        "served": runs[worst].served, "load_max_over_min": balances[worst],
        "per_run": [{"hit_rate": run.hit_tokens / run.queried_tokens if run.queried_tokens else 0.0,
                     "ttft_p50_ms": _ttft_p50(run), "served": run.served, "load_max_over_min": balance}
                    for run, balance in zip(runs, balances)],
        "cache_tokens": min(run.cache_tokens for run in runs),
        "num_preemptions": sum(run.num_preemptions for run in runs),
        "summary": summary.model_dump(mode="json"),
        "requests": [{"run": number, "index": r.index, "follow_up": requests[r.index].after is not None,
                      "sent_ms": r.sent_ms, "ttft_ms": r.ttft_ms, "input_tokens": r.input_tokens, "error": r.error}
                     for number, run in enumerate(runs) for r in run.records],
    }


def _ttft_p50(run: Run) -> float | None:
    ttft = summarize(run.records, run.duration).ttft_ms
    return ttft.p50 if ttft else None


# -- report -------------------------------------------------------------------------------------------------


def markdown(results: list[dict], reference: dict) -> str:
    baseline = next((r for r in results if r["name"] == "round_robin"), None)
    lines = ["| policy | hit rate | / reference | TTFT p50 ms | / round_robin | TTFT p99 ms | req/s | out tok/s | "
             "requests per replica | max/min |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for row in [reference, *results]:
        ratio = row["hit_rate"] / reference["hit_rate"] if reference["hit_rate"] else float("nan")
        ttft_ratio = (row["ttft_p50_ms"] / baseline["ttft_p50_ms"]) if baseline and row is not reference else None
        lines.append(
            f"| {row['name']} | {row['hit_rate']:.3f} | {ratio:.2f} | {row['ttft_p50_ms']:.0f} | "
            f"{'-' if ttft_ratio is None else f'{ttft_ratio:.2f}'} | {row['ttft_p99_ms']:.0f} | "
            f"{row['request_throughput']:.3f} | {row['output_throughput']:.2f} | "
            f"{' / '.join(str(n) for n in row['served'].values())} | "
            f"{'-' if row is reference else format(row['load_max_over_min'], '.2f')} |")
    return "\n".join(lines)


def goals(results: list[dict], reference: dict) -> list[str]:
    """The targets for the cache-aware policies, each with whether this run met it."""
    by = {r["name"]: r for r in results}
    checks = []
    for name in ("prefix_aware", "kv_aware"):
        row = by.get(name)
        if row is None:
            continue
        ratio = row["hit_rate"] / reference["hit_rate"] if reference["hit_rate"] else 0.0
        checks.append(f"{name}: hit rate {ratio:.2f}x reference (goal >= 0.9) {'met' if ratio >= 0.9 else 'MISSED'}")
        if "round_robin" in by:
            ttft = row["ttft_p50_ms"] / by["round_robin"]["ttft_p50_ms"]
            checks.append(f"{name}: TTFT p50 {ttft:.2f}x round_robin (goal <= 0.5) "
                          f"{'met' if ttft <= 0.5 else 'MISSED'}")
        balance = row["load_max_over_min"]
        checks.append(f"{name}: max/min load {balance:.2f} (goal <= 1.5) {'met' if balance <= 1.5 else 'MISSED'}")
    return checks


# -- main ---------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="slipway-bench-routing-"))
    rows = load_trace(args.trace, max_requests=args.window)
    turns = select_turns(rows, args.requests, args.max_turns)
    results: list[dict] = []
    started = time.monotonic()
    try:
        console.print(f"reference: 1 replica, KV cache {args.reference_kv_memory}, {args.reference_threads} threads")
        engine_env = {"SLIPWAY_LLM_SHORT_PREFILL_TOKENS": str(args.short_prefill_tokens)}
        fleet = start_replicas(work, "reference", 1, {**engine_env,
                                                      "SLIPWAY_LLM_KV_CACHE_MEMORY": args.reference_kv_memory,
                                                      "OMP_NUM_THREADS": str(args.reference_threads)})
        try:
            requests = build_requests(turns, fetch_tokenizer(fleet.replicas[0][1], work / "tokenizer"), args)
            first_turns = sum(1 for turn in turns if turn.parent is None)
            console.print(f"workload: {len(requests)} requests in {first_turns} "
                          f"conversations, {sum(r.input_tokens for r in requests)} prompt tokens (before the chat "
                          f"template), {sum(r.output_tokens for r in requests)} output tokens")
            reference = pooled("reference", [measure_run("reference", fleet, fleet.replicas[0][1], requests,
                                                         args.concurrency)], requests)
        finally:
            fleet.stop()
        # Every token of every request, the chat template's ~30 included: what a cache that never evicts holds.
        total_tokens = sum(r.input_tokens + r.output_tokens + 32 for r in requests)
        if reference["cache_tokens"] < total_tokens:
            console.print(f"[yellow]the reference cache holds {reference['cache_tokens']} tokens, less than the "
                          f"workload's ~{total_tokens}: it may have evicted; raise --reference-kv-memory[/]")
        console.print(f"  hit rate {reference['hit_rate']:.3f}, TTFT p50 {reference['ttft_p50_ms']:.0f} ms")
        replica_env = {**engine_env, "OMP_NUM_THREADS": "1"}
        if args.replica_kv_memory:
            replica_env["SLIPWAY_LLM_KV_CACHE_MEMORY"] = args.replica_kv_memory
        for policy in args.policies:
            runs = []
            for number in range(args.repeat):
                fleet = start_replicas(work, policy, args.replicas, replica_env)
                try:
                    start_gateway(work, policy, fleet, name=f"{policy}-{number + 1}")
                    label = policy if args.repeat == 1 else f"{policy} {number + 1}/{args.repeat}"
                    runs.append(measure_run(label, fleet, fleet.gateway[0], requests, args.concurrency))
                finally:
                    fleet.stop()
                console.print(f"  {label}: hit rate {runs[-1].hit_tokens / max(1, runs[-1].queried_tokens):.3f}, "
                              f"TTFT p50 {_ttft_p50(runs[-1]) or 0:.0f} ms, served {list(runs[-1].served.values())}")
            results.append(pooled(policy, runs, requests))
    finally:
        if args.keep:
            console.print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    table = markdown(results, reference)
    checks = goals(results, reference)
    console.print()
    print(table)
    print()
    for line in checks:
        print(f"- {line}")
    return {
        "table": table, "goals": checks, "reference": reference, "policies": results,
        "workload": {"requests": len(requests), "prompt_tokens": sum(r.input_tokens for r in requests),
                     "output_tokens": sum(r.output_tokens for r in requests), "trace": str(args.trace)},
        "settings": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        "seconds": round(time.monotonic() - started, 1), "cpus": len(os.sched_getaffinity(0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trace", type=Path, default=TRACE, help="Mooncake conversation trace (JSONL).")
    parser.add_argument("--window", type=int, default=3000, help="Trace rows conversations are taken from.")
    parser.add_argument("--requests", type=int, default=150, help="Requests (trace rows) sent per run.")
    parser.add_argument("--max-turns", type=int, default=6, help="Most turns kept of one conversation.")
    parser.add_argument("--concurrency", type=int, default=6, help="Requests in flight at most (closed loop).")
    parser.add_argument("--block-tokens", type=int, default=16, help="SmolLM2 tokens per 512-token trace block.")
    parser.add_argument("--max-prompt-tokens", type=int, default=1024, help="Prompts are cut to this many tokens.")
    parser.add_argument("--max-output", type=int, default=16, help="Most output tokens per request.")
    parser.add_argument("--replicas", type=int, default=3, help="Replicas behind the gateway.")
    parser.add_argument("--replica-kv-memory", default=None,
                        help="KV cache of each routed replica (e.g. 256Mi); default: the engine's.")
    parser.add_argument("--reference-kv-memory", default="2Gi", help="KV cache of the reference replica.")
    parser.add_argument("--short-prefill-tokens", type=int, default=128,
                        help="The engine's short_prefill_tokens on every replica, reference included: prompts with "
                             "at most this many tokens left after their cached prefix go first (0: by arrival).")
    parser.add_argument("--reference-threads", type=int, default=2, help="Engine threads of the reference replica.")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--repeat", type=int, default=2,
                        help="Runs of the workload per policy, each on fresh replicas; pooled (see the docstring).")
    parser.add_argument("--keep", action="store_true", help="Keep the work folder (replica and gateway logs).")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "routing.json",
                        help="Where the JSON results go.")
    args = parser.parse_args()
    if args.repeat < 1:
        raise SystemExit(f"--repeat {args.repeat}: each policy needs at least one run; pass --repeat 1 or more")
    if not args.trace.is_file():
        raise SystemExit(f"trace {args.trace} not found; pass --trace PATH to the Mooncake conversation trace")
    results = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    console.print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
