"""`python -m slipway.server` as a real subprocess on a free port, found through --port-file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

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
