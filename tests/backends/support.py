"""Helpers for tests that run real replica processes: packages, waiting, and leak checks.

Leaks are found from /proc, not from the backend under test: a live process whose command line
names the test's slipway home is an orphan, a child of the test process in state Z is a zombie.
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

from slipway.backends import LocalBackend
from slipway.spec.replica import ReplicaObservation, ReplicaState

REPO = Path(__file__).resolve().parents[2]
ECHO = REPO / "examples" / "echo"
STANDIN = Path(__file__).resolve().parent / "standin_replica.py"
STANDIN_COMMAND = [sys.executable, str(STANDIN)]

T = TypeVar("T")

FAILING_MODEL = """
    class Model:
        def load(self):
            raise RuntimeError("weights are corrupt")

        def predict(self, request):
            return request
"""

ENV_MODEL = """
    import os

    class Model:
        def load(self):
            pass

        def predict(self, request):
            return {"replica_id": os.environ.get("SLIPWAY_REPLICA_ID"), "greeting": os.environ.get("GREETING"),
                    "cwd": os.getcwd()}
"""


def write_package(folder: Path, name: str, model_py: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "slipway.yaml").write_text(f"name: {name}\nkind: custom\n")
    (folder / "model.py").write_text(textwrap.dedent(model_py))
    return folder


def process_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie."""
    return process_state(pid) not in (None, "Z", "X")


def processes_naming(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def zombie_children() -> list[int]:
    """Children of this test process that exited and were never reaped."""
    zombies = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            zombies.append(int(entry.name))
    return zombies


async def wait_for(probe: Callable[[], Awaitable[T]], timeout: float = 15.0, what: str = "condition") -> T:
    """Await `probe()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {value!r}")
        await asyncio.sleep(0.05)


async def observed(backend: LocalBackend, replica_id: str) -> ReplicaObservation | None:
    return next((o for o in await backend.observe() if o.replica_id == replica_id), None)


async def wait_state(backend: LocalBackend, replica_id: str, state: ReplicaState,
                     timeout: float = 15.0) -> ReplicaObservation:
    async def reached() -> ReplicaObservation | None:
        found = await observed(backend, replica_id)
        return found if found is not None and found.state == state else None

    return await wait_for(reached, timeout, f"replica {replica_id} to be {state.value}")


async def end_everything(backends: list[LocalBackend]) -> None:
    """Kill and forget every replica the backends know (newest backend first), then close them."""
    for backend in reversed(backends):
        for replica in await backend.observe():
            await backend.forget(replica.replica_id)
    for backend in backends:
        await backend.close()


def assert_no_leftovers(home: Path) -> None:
    orphans = processes_naming(str(home))
    assert not orphans, f"processes outlived the test: {orphans}"
    zombies = zombie_children()
    assert not zombies, f"children left unreaped: {zombies}"
