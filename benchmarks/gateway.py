"""What the slipway gateway adds over calling a replica directly, and the same for LiteLLM's proxy.

    python benchmarks/gateway.py [--duration 5] [--concurrency 1 16] [--out benchmarks/out/gateway.json]

Processes, placed on a 2-core machine so the proxy under test has a core of its own:

    upstream  raw asyncio + httptools on uvloop; answers POST /v1/embeddings at once with a small
              OpenAI embeddings body (with usage)                                       CPU 0
    load      this process: closed loop over C keep-alive connections, raw asyncio +
              httptools on uvloop; one request in flight per connection                 CPU 0
    gateway   `python -m slipway.gateway`: the real create_gateway_app over a fixed
              snapshot -> upstream, API key checked, usage journal on, SQLite store     CPU 1
    litellm   `litellm --num_workers 1`, one model openai/bench with api_base = the
              upstream (benchmarks/.peers/litellm-venv, from benchmarks/peers/litellm.sh) CPU 1

For each concurrency it measures direct (load -> upstream), then through slipway, then through
LiteLLM, each after a warm-up, and reports p50/p99 latency, requests/s, and the latency each
proxy adds over direct. The LiteLLM rows are skipped, with how to install it, when its venv is
missing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httptools
import httpx
import uvloop

REPO = Path(__file__).resolve().parents[1]
LITELLM = REPO / "benchmarks" / ".peers" / "litellm-venv" / "bin" / "litellm"
BENCH_KEY = "sk-slw-" + "b" * 40
# LiteLLM refuses to start without a master key; with one (and no database) it checks each request's key.
LITELLM_KEY = "sk-" + hashlib.sha256(b"slipway gateway benchmark").hexdigest()
MODEL = "bench"
REQUEST_BODY = json.dumps({"model": MODEL, "input": "the quick brown fox"}).encode()
UPSTREAM_BODY = json.dumps({
    "object": "list", "model": MODEL,
    "data": [{"object": "embedding", "index": 0, "embedding": [0.125, -0.5, 0.25, 0.0625]}],
    "usage": {"prompt_tokens": 4, "total_tokens": 4},
}, separators=(",", ":")).encode()
UPSTREAM_RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(UPSTREAM_BODY), UPSTREAM_BODY))


# -- the upstream: as fast as Python gets, so the proxies' cost is what shows -------------------------

class _UpstreamProtocol(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_complete(self) -> None:
        self.transport.write(UPSTREAM_RESPONSE)


async def _serve_upstream(port_file: Path) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_UpstreamProtocol, "127.0.0.1", 0, backlog=2048)
    port_file.write_text(str(server.sockets[0].getsockname()[1]))
    await asyncio.Event().wait()


# -- the load generator ------------------------------------------------------------------------------

class _LoadProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[int] | None = None
        self.status = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self.status)

    def connection_lost(self, exc) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("server closed the connection"))


async def _worker(port: int, request: bytes, start: float, end: float, latencies: list[float],
                  errors: list[str]) -> None:
    loop = asyncio.get_running_loop()
    protocol: _LoadProtocol | None = None
    while True:
        if protocol is None or protocol.transport.is_closing():
            _, protocol = await loop.create_connection(_LoadProtocol, "127.0.0.1", port)
        waiter = protocol.waiter = loop.create_future()
        sent = time.perf_counter()
        protocol.transport.write(request)
        try:
            status = await waiter
        except ConnectionError as exc:
            errors.append(str(exc))
            protocol = None
            continue
        done = time.perf_counter()
        if done >= end:
            protocol.transport.close()
            return
        if sent >= start:
            if status == 200:
                latencies.append(done - sent)
            else:
                errors.append(f"HTTP {status}")


async def _load(port: int, headers: dict[str, str], concurrency: int, warmup: float, duration: float) -> dict:
    head = "".join(f"{k}: {v}\r\n" for k, v in {
        "host": f"127.0.0.1:{port}", "content-type": "application/json",
        "content-length": str(len(REQUEST_BODY)), **headers}.items())
    request = f"POST /v1/embeddings HTTP/1.1\r\n{head}\r\n".encode() + REQUEST_BODY
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter() + warmup
    end = start + duration
    await asyncio.gather(*(_worker(port, request, start, end, latencies, errors) for _ in range(concurrency)))
    latencies.sort()
    if not latencies:
        raise RuntimeError(f"no request succeeded; errors: {errors[:3]}")
    return {
        "requests": len(latencies), "errors": len(errors), "rps": round(len(latencies) / duration, 1),
        "p50_ms": round(_percentile(latencies, 50) * 1000, 3), "p99_ms": round(_percentile(latencies, 99) * 1000, 3),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 3),
    }


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


# -- processes ---------------------------------------------------------------------------------------

def _pin(pid: int, cpu: int) -> None:
    cpus = os.sched_getaffinity(0)
    if len(cpus) > 1 and cpu in cpus:
        os.sched_setaffinity(pid, {cpu})


def _spawn(args: list[str], log: Path, cpu: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    process = subprocess.Popen(args, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, start_new_session=True)
    _pin(process.pid, cpu)
    return process


def _wait_port_file(path: Path, process: subprocess.Popen, log: Path, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().strip():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.args[0]} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    return int(path.read_text())


def _wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} never answered:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _snapshot(upstream_url: str) -> str:
    from slipway.spec.snapshot import DeploymentEntry, KeyEntry, ModelEntry, ReplicaEntry, RoutingSnapshot

    return RoutingSnapshot(
        version=1,
        keys=[KeyEntry(key_id="k-bench", key_hash=hashlib.sha256(BENCH_KEY.encode()).hexdigest(),
                       workspace_id="ws-bench", scopes=["invoke"])],
        models=[ModelEntry(workspace_id="ws-bench", name=MODEL, environments={"production": "d-bench"})],
        deployments=[DeploymentEntry(deployment_id="d-bench", model_name=MODEL, number=1, kind="embedding",
                                     status="active", workspace_id="ws-bench",
                                     replicas=[ReplicaEntry(replica_id="r-bench", url=upstream_url)])],
    ).model_dump_json()


def _start_slipway(work: Path, upstream_url: str, flush_interval: float) -> tuple[subprocess.Popen, int]:
    (work / "snapshot.json").write_text(_snapshot(upstream_url))
    log = work / "gateway.log"
    port_file = work / "gateway.port"
    process = _spawn([sys.executable, "-m", "slipway.gateway", "--snapshot-file", str(work / "snapshot.json"),
                      "--home", str(work / "home"), "--port", "0", "--port-file", str(port_file),
                      "--usage-flush-interval", str(flush_interval)], log, cpu=1)
    port = _wait_port_file(port_file, process, log)
    _wait_http(f"http://127.0.0.1:{port}/health", process, log)
    return process, port


def _start_litellm(work: Path, upstream_url: str) -> tuple[subprocess.Popen, int]:
    config = work / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream_url}/v1\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n")
    port = _free_port()
    log = work / "litellm.log"
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
    process = _spawn([str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                      "--num_workers", "1"], log, cpu=1, env=env)
    _wait_http(f"http://127.0.0.1:{port}/health/liveliness", process, log, timeout=180)
    return process, port


# -- the run -----------------------------------------------------------------------------------------

def _measure(name: str, port: int, headers: dict[str, str], args: argparse.Namespace, rows: list[dict]) -> None:
    for concurrency in args.concurrency:
        result = uvloop.run(_load(port, headers, concurrency, args.warmup, args.duration))
        rows.append({"target": name, "concurrency": concurrency, **result})
        print(f"  {name:<8} c={concurrency:<3} p50 {result['p50_ms']:7.3f} ms  p99 {result['p99_ms']:7.3f} ms  "
              f"{result['rps']:9.1f} req/s  errors {result['errors']}", flush=True)


def _summarise(rows: list[dict], concurrencies: list[int]) -> dict:
    by = {(r["target"], r["concurrency"]): r for r in rows}
    summary: dict = {}
    for c in concurrencies:
        direct = by[("direct", c)]
        for target in ("slipway", "litellm"):
            row = by.get((target, c))
            if row is not None:
                summary[f"{target}_added_p50_ms_c{c}"] = round(row["p50_ms"] - direct["p50_ms"], 3)
                summary[f"{target}_added_p99_ms_c{c}"] = round(row["p99_ms"] - direct["p99_ms"], 3)
        if ("litellm", c) in by:
            slipway_added = max(summary[f"slipway_added_p50_ms_c{c}"], 0.001)
            summary[f"litellm_over_slipway_added_p50_c{c}"] = round(
                summary[f"litellm_added_p50_ms_c{c}"] / slipway_added, 1)
    summary["slipway_max_rps"] = max(r["rps"] for r in rows if r["target"] == "slipway")
    return summary


def _print_table(rows: list[dict], summary: dict) -> None:
    print()
    print(f"{'target':<9}{'conc':>5}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>11}{'errors':>8}")
    for r in rows:
        print(f"{r['target']:<9}{r['concurrency']:>5}{r['p50_ms']:>10.3f}{r['p99_ms']:>10.3f}{r['rps']:>11.1f}"
              f"{r['errors']:>8}")
    print()
    for key, value in summary.items():
        print(f"  {key:<38} {value}")


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="slipway-bench-gateway-"))
    _pin(0, 0)
    processes: list[subprocess.Popen] = []
    rows: list[dict] = []
    try:
        upstream_log = work / "upstream.log"
        upstream = _spawn([sys.executable, __file__, "upstream", "--port-file", str(work / "upstream.port")],
                          upstream_log, cpu=0)
        processes.append(upstream)
        upstream_port = _wait_port_file(work / "upstream.port", upstream, upstream_log)
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        print("direct (load -> upstream)", flush=True)
        _measure("direct", upstream_port, {}, args, rows)

        gateway, port = _start_slipway(work, upstream_url, args.usage_flush_interval)
        processes.append(gateway)
        print("through the slipway gateway", flush=True)
        _measure("slipway", port, {"authorization": f"Bearer {BENCH_KEY}"}, args, rows)
        _stop(gateway)

        if args.skip_litellm:
            print("LiteLLM skipped (--skip-litellm)")
        elif not LITELLM.exists():
            print(f"LiteLLM skipped: {LITELLM} is missing; create it with benchmarks/peers/litellm.sh")
        else:
            litellm, port = _start_litellm(work, upstream_url)
            processes.append(litellm)
            print("through the LiteLLM proxy", flush=True)
            _measure("litellm", port, {"authorization": f"Bearer {LITELLM_KEY}"}, args, rows)
            _stop(litellm)
    finally:
        for process in processes:
            _stop(process)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    summary = _summarise(rows, args.concurrency)
    _print_table(rows, summary)
    return {"rows": rows, "summary": summary, "duration_s": args.duration, "warmup_s": args.warmup,
            "cpus": len(os.sched_getaffinity(0)), "python": sys.version.split()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    upstream = sub.add_parser("upstream", help="(internal) run the upstream server")
    upstream.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--duration", type=float, default=5.0, help="Seconds measured per row.")
    parser.add_argument("--warmup", type=float, default=1.0, help="Seconds of load before measuring.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16], help="Connections in flight.")
    parser.add_argument("--usage-flush-interval", type=float, default=0.5,
                        help="The gateway's seconds between usage writes to its SQLite store.")
    parser.add_argument("--skip-litellm", action="store_true", help="Measure direct and slipway only.")
    parser.add_argument("--keep", action="store_true", help="Keep the work folder (logs, journal) afterwards.")
    parser.add_argument("--out", type=Path, help="Write the results as JSON here.")
    args = parser.parse_args()
    if args.command == "upstream":
        uvloop.run(_serve_upstream(args.port_file))
        return
    results = run(args)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
