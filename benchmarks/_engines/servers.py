"""Each engine's OpenAI-compatible server on 127.0.0.1: how it starts, when it is ready, how it stops.

    builtin    python -m slipway.server --package examples/smollm2 --port 0 --port-file F
               (a replica, as a backend starts one); ready when GET /health/ready is 200
    vllm       vLLM's api_server from benchmarks/.peers/vllm-venv with the command and environment
               slipway's vllm engine uses (slipway.runtimes.vllm_process): bf16, max-model-len 2048,
               1 GiB of KV cache, OpenMP threads bound to every core, offline, private caches
    llamacpp   llama-cpp-python's server from benchmarks/.peers/llamacpp-venv on the GGUF, 2 threads

Every server runs in its own process group with its output in a log file, so `stop` ends its
workers too and a failed start shows the log's tail.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from slipway.runtimes.vllm_process import available_cpus, free_port, tmp_folder, vllm_command, vllm_environment
from slipway.spec.package import PACKAGE_FILE, parse_package

from _engines.workload import EXAMPLE_PACKAGE, REPO, ModelFiles

PEERS = REPO / "benchmarks" / ".peers"
_LOG_TAIL_CHARS = 4000
_POLL_SECONDS = 0.5
# Builtin and vLLM compile their model at start (minutes on 2 busy cores); llama.cpp only maps a file.
_COMPILING_START_TIMEOUT_S = 1800.0
_PLAIN_START_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class PeerVenv:
    """A peer engine's private virtualenv and the script that creates it."""

    folder: Path
    script: str

    @property
    def python(self) -> Path:
        return self.folder / "bin" / "python"

    @property
    def missing_reason(self) -> str | None:
        """None when the venv is there; else a line saying how to create it."""
        if self.python.exists():
            return None
        return f"{self.python} is missing; create it with {self.script}"


# The scripts honour the same variables, so a venv made elsewhere is found here too.
VLLM_VENV = PeerVenv(Path(os.environ.get("SLIPWAY_VLLM_VENV") or PEERS / "vllm-venv"), "benchmarks/peers/vllm.sh")
LLAMACPP_VENV = PeerVenv(Path(os.environ.get("SLIPWAY_LLAMACPP_VENV") or PEERS / "llamacpp-venv"),
                         "benchmarks/peers/llamacpp.sh")


@dataclass
class RunningServer:
    """One engine's server process and where to reach it."""

    engine: str
    process: subprocess.Popen
    log: Path
    spawned_at: float
    """time.monotonic() when the process was started."""
    base_url: str = ""
    startup_s: float | None = None
    """Seconds from spawn to the first ready answer."""
    extra: dict[str, Any] = field(default_factory=dict)

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-_LOG_TAIL_CHARS:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left after 20 s."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                pass
        # Workers (vLLM's engine core) may outlive the leader; the group id still names them.
        _signal_group(self.process.pid, signal.SIGKILL)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            pass
        atexit.unregister(self.stop)


class ServerStartError(RuntimeError):
    """An engine's server exited or never became ready; the message ends with its log's tail."""


BUILTIN_KV_CACHE_MEMORY = "1Gi"


def start_builtin(files: ModelFiles, work: Path) -> RunningServer:
    """A slipway replica serving examples/smollm2 with the built-in engine."""
    port_file = work / "builtin.port"
    server = _spawn("builtin", [sys.executable, "-m", "slipway.server", "--package", str(EXAMPLE_PACKAGE),
                                "--port", "0", "--port-file", str(port_file), "--replica-id", "r-bench-engines"],
                    work, env={"PYTHONPATH": str(REPO), "SLIPWAY_LOG_LEVEL": "WARNING",
                               # The KV cache vLLM gets (VLLM_CPU_KVCACHE_SPACE=1 GiB): with the example's
                               # 256 MiB, 16 long conversations do not fit and wait or are preempted.
                               "SLIPWAY_LLM_KV_CACHE_MEMORY": BUILTIN_KV_CACHE_MEMORY})
    port = _wait_port_file(server, port_file, timeout_s=120)
    server.base_url = f"http://127.0.0.1:{port}"
    _wait_ready(server, server.base_url + "/health/ready", timeout_s=_COMPILING_START_TIMEOUT_S)
    return server


def start_vllm(files: ModelFiles, work: Path) -> RunningServer:
    """vLLM's OpenAI server on the converted folder, set up as slipway's vllm engine sets it up."""
    spec = parse_package((EXAMPLE_PACKAGE / PACKAGE_FILE).read_text())
    port = free_port()
    private = work / "vllm"
    for folder in (private / "cache", tmp_folder(private)):
        folder.mkdir(parents=True, exist_ok=True)
    env = vllm_environment(os.environ, private, available_cpus())
    server = _spawn("vllm", vllm_command(VLLM_VENV.python, files.hf_folder, port, spec), work, env=env,
                    replace_env=True)
    server.base_url = f"http://127.0.0.1:{port}"
    server.extra = {"VLLM_CPU_OMP_THREADS_BIND": env.get("VLLM_CPU_OMP_THREADS_BIND"),
                    "VLLM_CPU_KVCACHE_SPACE": env.get("VLLM_CPU_KVCACHE_SPACE")}
    _wait_ready(server, server.base_url + "/health", timeout_s=_COMPILING_START_TIMEOUT_S)
    return server


def start_llamacpp(files: ModelFiles, work: Path, threads: int) -> RunningServer:
    """llama-cpp-python's OpenAI server on the GGUF, `threads` threads for prompt and decode."""
    port = free_port()
    argv = [str(LLAMACPP_VENV.python), "-m", "llama_cpp.server", "--model", str(files.gguf),
            "--model_alias", files.name, "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", str(files.max_model_len), "--n_threads", str(threads), "--n_threads_batch", str(threads),
            # By default a new request cancels the one streaming; a closed loop of N streams needs them queued.
            "--interrupt_requests", "False"]
    server = _spawn("llamacpp", argv, work)
    server.base_url = f"http://127.0.0.1:{port}"
    server.extra = {"n_threads": threads}
    _wait_ready(server, server.base_url + "/v1/models", timeout_s=_PLAIN_START_TIMEOUT_S)
    return server


def _spawn(engine: str, argv: list[str], work: Path, *, env: dict[str, str] | None = None,
           replace_env: bool = False) -> RunningServer:
    log = work / f"{engine}.log"
    process_env = dict(env or {}) if replace_env else {**os.environ, **(env or {})}
    process = subprocess.Popen(argv, cwd=REPO, env=process_env, stdin=subprocess.DEVNULL,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    server = RunningServer(engine=engine, process=process, log=log, spawned_at=time.monotonic())
    atexit.register(server.stop)
    return server


def _wait_port_file(server: RunningServer, port_file: Path, *, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while not (port_file.exists() and port_file.read_text().strip()):
        _check_alive(server, deadline, f"write its port to {port_file}")
        time.sleep(0.05)
    return int(port_file.read_text())


def _wait_ready(server: RunningServer, url: str, *, timeout_s: float) -> None:
    """Poll `url` until it answers 200; then record how long the start took."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                server.startup_s = time.monotonic() - server.spawned_at
                return
        except httpx.TransportError:
            pass
        _check_alive(server, deadline, f"answer {url}")
        time.sleep(_POLL_SECONDS)


def _check_alive(server: RunningServer, deadline: float, doing: str) -> None:
    if server.process.poll() is not None:
        raise ServerStartError(f"{server.engine} exited with code {server.process.returncode} before it could "
                               f"{doing}; its log ({server.log}) ends:\n{server.log_tail()}")
    if time.monotonic() > deadline:
        server.stop()
        raise ServerStartError(f"{server.engine} did not {doing} in time; its log ({server.log}) ends:\n"
                               f"{server.log_tail()}")


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):  # the group is gone already
        pass
