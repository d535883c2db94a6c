"""`slipway up` as a real process on a free loopback port, with its own $SLIPWAY_HOME.

End-to-end tests drive it the way a user does: the CLI, the official `openai` client, and HTTP.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def replica_pids(home: Path) -> list[int]:
    """Pids of live replica processes whose command line names this home's package snapshots."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"slipway.server" in cmdline and any(str(home).encode() in part for part in cmdline):
            if pid_alive(int(proc.name)):
                pids.append(int(proc.name))
    return sorted(pids)


@dataclass
class Slipway:
    home: Path
    port: int
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"SLIPWAY_HOME": str(self.home), "SLIPWAY_URL": self.url, "HF_HUB_OFFLINE": "1",
                    "TOKENIZERS_PARALLELISM": "false"})
        env.pop("SLIPWAY_API_KEY", None)
        env.update(self.extra_env)
        return env

    @property
    def admin_key(self) -> str:
        return (self.home / "admin.key").read_text().strip()

    def start(self, *args: str, timeout: float = 60.0) -> None:
        self.log_path = self.home / f"up-{int(time.time() * 1000)}.log"
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "slipway", "up", "--port", str(self.port), *args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"slipway up exited {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200 and (self.home / "admin.key").exists():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"slipway up not answering after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)

    def cli(self, *args: str, check: bool = True, timeout: float = 300.0) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "slipway", *args], env=self.env, cwd=REPO,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"slipway {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def http(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60,
                            headers={"Authorization": f"Bearer {key or self.admin_key}"})

    def cleanup(self) -> None:
        self.stop(signal.SIGINT)
        for pid in replica_pids(self.home):  # never leave a replica behind, even when a test failed
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture
def slipway_up(tmp_path):
    """A started `slipway up` (no packages deployed) with a fresh home; stopped afterwards."""
    node = Slipway(home=tmp_path / "home", port=free_port())
    node.home.mkdir()
    node.start()
    yield node
    node.cleanup()


@pytest.fixture
def make_slipway(tmp_path):
    """A factory for a not-yet-started `slipway up`, for tests that restart it."""
    nodes: list[Slipway] = []

    def make() -> Slipway:
        node = Slipway(home=tmp_path / "home", port=free_port())
        node.home.mkdir(exist_ok=True)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.cleanup()
