"""Replicas for the server tests: `python -m slipway.server` as a real subprocess on a free port,
found through --port-file; or a `ReplicaApp` served by uvicorn in a thread of the test process,
when a test needs to look inside it (the engine's counters) while it serves real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

REPO = Path(__file__).resolve().parents[2]


def write_package(folder: Path, yaml: str, model_py: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "slipway.yaml").write_text(textwrap.dedent(yaml))
    if model_py is not None:
        (folder / "model.py").write_text(textwrap.dedent(model_py))
    return folder


@dataclass
class Replica:
    process: subprocess.Popen
    port_file: Path
    stderr_path: Path
    port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def wait_port(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.port_file.exists():
                self.port = int(self.port_file.read_text())
                return self.port
            if self.process.poll() is not None:
                raise AssertionError(f"replica exited {self.process.returncode} before listening:\n{self.stderr()}")
            time.sleep(0.02)
        raise AssertionError(f"no port file after {timeout}s:\n{self.stderr()}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait_port()
        deadline = time.monotonic() + timeout
        with self.client() as http:
            while time.monotonic() < deadline:
                if http.get("/health/ready").status_code == 200:
                    return
                if self.process.poll() is not None:
                    raise AssertionError(f"replica exited {self.process.returncode}:\n{self.stderr()}")
                time.sleep(0.05)
        raise AssertionError(f"replica not ready after {timeout}s:\n{self.stderr()}")

    def wait_exit(self, timeout: float = 20.0) -> int:
        return self.process.wait(timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


def launch_replica(package_dir: Path, workdir: Path, name: str, *args: str) -> Replica:
    """Start a replica process whose port file and stderr live in `workdir`."""
    port_file = workdir / f"{name}.port"
    stderr_path = workdir / f"{name}.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "slipway.server", "--package", str(package_dir), "--port", "0",
             "--port-file", str(port_file), "--replica-id", name, *args],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
        )
    return Replica(process, port_file, stderr_path)


@pytest.fixture
def start_replica(tmp_path):
    """start_replica(package_dir, *args) -> Replica, killed at the end of the test if still running."""
    started: list[Replica] = []

    def start(package_dir: Path, *args: str) -> Replica:
        replica = launch_replica(package_dir, tmp_path, f"r-test-{len(started)}", *args)
        started.append(replica)
        return replica

    yield start
    for replica in started:
        replica.stop()


class InThreadReplica:
    """`app` served by uvicorn on a free 127.0.0.1 port, in a thread; a context manager."""

    def __init__(self, app) -> None:
        self.app = app
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="on", http="httptools"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "InThreadReplica":
        self.thread.start()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.app.state.ready:
            assert self.app.state.load_error is None, self.app.state.load_error
            assert time.monotonic() < deadline, f"the replica did not load in {timeout}s"
            time.sleep(0.02)

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
