"""LocalBackend with real replica processes: `python -m slipway.server` on packages, and a stand-in
replica (tests/backends/standin_replica.py) for behaviours the real server never shows."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import httpx
import pytest

from slipway.backends import LocalBackend, processes
from slipway.backends.registry import ReplicaRecord
from slipway.errors import BackendError, ConflictError, NotFoundError
from slipway.spec.replica import EXIT_LOAD_FAILED, ReplicaLaunch, ReplicaState
from tests.backends.support import (
    ECHO, ENV_MODEL, FAILING_MODEL, STANDIN_COMMAND, observed, pid_alive, processes_naming, wait_for, wait_state,
    write_package,
)


def launch(replica_id: str, package_dir, deployment_id: str = "dep-1", **env: str) -> ReplicaLaunch:
    return ReplicaLaunch(replica_id=replica_id, deployment_id=deployment_id, package_dir=str(package_dir), env=env)


async def test_start_returns_at_once_then_becomes_ready(make_backend, tmp_path, home):
    backend = make_backend()
    package = write_package(tmp_path / "env-pkg", "envdump", ENV_MODEL)
    started = await backend.start(launch("r-env", package, GREETING="hello"))
    assert started.state == ReplicaState.STARTING and started.url is None and pid_alive(started.pid)
    # What the leak check after each test relies on. Between fork and exec the child still shows the
    # parent's command line, so give it a moment.
    deadline = time.monotonic() + 5
    while processes_naming(str(home)) != [started.pid] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert processes_naming(str(home)) == [started.pid]

    ready = await wait_state(backend, "r-env", ReplicaState.READY)
    assert ready.url.startswith("http://127.0.0.1:") and ready.pid == started.pid
    async with httpx.AsyncClient(trust_env=False) as http:
        answer = (await http.post(f"{ready.url}/predict", json={})).json()
    assert answer == {"replica_id": "r-env", "greeting": "hello", "cwd": str(package)}

    record = json.loads((home / "run" / "replicas" / "r-env.json").read_text())
    assert record["pid"] == started.pid and record["deployment_id"] == "dep-1"
    assert record["pid_start_ticks"] == processes.start_ticks(started.pid)
    # Its own session: a Ctrl-C sent to the control plane's process group does not reach it.
    assert os.getsid(started.pid) == started.pid != os.getsid(0)
    assert "starting replica r-env" in await backend.logs("r-env")


async def test_sigkilled_replica_is_crashed_and_reaped(make_backend):
    backend = make_backend()
    await backend.start(launch("r-kill", ECHO))
    ready = await wait_state(backend, "r-kill", ReplicaState.READY)
    os.kill(ready.pid, signal.SIGKILL)

    crashed = await wait_state(backend, "r-kill", ReplicaState.CRASHED)
    assert crashed.exit_code == -signal.SIGKILL and "SIGKILL" in crashed.detail
    assert processes.read_stat(ready.pid) is None, "the dead replica was left a zombie"


async def test_load_failure_is_failed_with_the_traceback_in_its_logs(make_backend, tmp_path):
    backend = make_backend()
    package = write_package(tmp_path / "broken", "broken", FAILING_MODEL)
    await backend.start(launch("r-broken", package))

    failed = await wait_state(backend, "r-broken", ReplicaState.FAILED)
    assert failed.exit_code == EXIT_LOAD_FAILED
    text = await backend.logs("r-broken", tail=50)
    assert "Traceback (most recent call last)" in text and "RuntimeError: weights are corrupt" in text


async def test_stop_drains_then_forget_keeps_the_log(make_backend, home):
    backend = make_backend()
    await backend.start(launch("r-stop", ECHO))
    ready = await wait_state(backend, "r-stop", ReplicaState.READY)

    began = time.monotonic()
    await backend.stop("r-stop", drain_timeout=10)
    assert time.monotonic() - began < 5, "an idle replica should drain at once, not wait for the timeout"
    stopped = await observed(backend, "r-stop")
    assert stopped.state == ReplicaState.STOPPED and stopped.exit_code == 0
    assert not pid_alive(ready.pid)
    await backend.stop("r-stop")  # idempotent
    await backend.stop("r-never-existed")

    await backend.forget("r-stop")
    assert await observed(backend, "r-stop") is None
    assert not (home / "run" / "replicas" / "r-stop.json").exists()
    assert "draining" in await backend.logs("r-stop")
    with pytest.raises(NotFoundError, match="no log for replica 'r-nope'"):
        await backend.logs("r-nope")


async def test_stop_kills_a_replica_that_ignores_sigterm_and_its_whole_group(make_backend, tmp_path):
    backend = make_backend(command=STANDIN_COMMAND)
    child_pid_file = tmp_path / "child.pid"
    await backend.start(launch("r-stubborn", tmp_path, STANDIN_IGNORE_SIGTERM="1",
                               STANDIN_CHILD_PID_FILE=str(child_pid_file)))
    ready = await wait_state(backend, "r-stubborn", ReplicaState.READY)
    child_pid = int(child_pid_file.read_text())
    assert pid_alive(child_pid)

    began = time.monotonic()
    await backend.stop("r-stubborn", drain_timeout=0.3)
    assert 0.3 <= time.monotonic() - began < 5
    stopped = await observed(backend, "r-stubborn")
    assert stopped.state == ReplicaState.STOPPED and stopped.exit_code == -signal.SIGKILL
    assert not pid_alive(ready.pid)
    await wait_for(lambda: _true(not pid_alive(child_pid)), 5, "the replica's child to die with its group")


async def _true(value: bool) -> bool:
    return value


async def test_forget_of_a_live_replica_kills_it_instead_of_orphaning_it(make_backend, tmp_path):
    backend = make_backend(command=STANDIN_COMMAND)
    started = await backend.start(launch("r-live", tmp_path))
    await backend.forget("r-live")
    assert not pid_alive(started.pid)
    assert await backend.observe() == []


async def test_a_new_backend_adopts_live_replicas_and_drops_dead_records(make_backend, home, tmp_path):
    first = make_backend(command=STANDIN_COMMAND)
    for replica_id in ("r-a", "r-b", "r-dead"):
        await first.start(launch(replica_id, tmp_path))
    for replica_id in ("r-a", "r-b", "r-dead"):
        await wait_state(first, replica_id, ReplicaState.READY)
    dead = await observed(first, "r-dead")
    os.kill(dead.pid, signal.SIGKILL)
    await wait_state(first, "r-dead", ReplicaState.CRASHED)  # reaped, record still on disk
    # A record whose pid is alive but belongs to another process (pid reuse): stale too.
    reused = ReplicaRecord(replica_id="r-reused", deployment_id="dep-1", pid=os.getpid(), pid_start_ticks=1,
                           port_file=str(tmp_path / "x.port"), package_dir=str(tmp_path), log_file="x",
                           started_at=0.0)
    (home / "run" / "replicas" / "r-reused.json").write_text(reused.model_dump_json())
    before = {o.replica_id: o for o in await first.observe()}

    second = make_backend(command=STANDIN_COMMAND)
    adopted = {o.replica_id: o for o in await second.observe()}
    assert set(adopted) == {"r-a", "r-b"}
    for replica_id in ("r-a", "r-b"):
        assert adopted[replica_id].pid == before[replica_id].pid
        assert adopted[replica_id].url == before[replica_id].url
        assert adopted[replica_id].state == ReplicaState.READY
    assert sorted(p.name for p in (home / "run" / "replicas").glob("*.json")) == ["r-a.json", "r-b.json"]

    # An adopted replica that dies is CRASHED; its exit code is unknown to a non-parent.
    os.kill(adopted["r-a"].pid, signal.SIGKILL)
    crashed = await wait_state(second, "r-a", ReplicaState.CRASHED)
    assert crashed.exit_code is None and "unknown" in crashed.detail
    # Stopping an adopted replica works through its process group too.
    await second.stop("r-b", drain_timeout=5)
    assert (await observed(second, "r-b")).state == ReplicaState.STOPPED
    assert not pid_alive(adopted["r-b"].pid)


async def test_start_refuses_bad_input_with_a_useful_error(make_backend, tmp_path):
    backend = make_backend(command=STANDIN_COMMAND)
    with pytest.raises(BackendError, match="does not exist; redeploy"):
        await backend.start(launch("r-x", tmp_path / "missing"))
    with pytest.raises(BackendError, match="cannot name a file"):
        await backend.start(launch("../escape", tmp_path))
    await backend.start(launch("r-dup", tmp_path))
    with pytest.raises(ConflictError, match="already exists"):
        await backend.start(launch("r-dup", tmp_path))
    missing_python = make_backend(python=str(tmp_path / "no-python"))
    with pytest.raises(BackendError, match="is a Python interpreter"):
        await missing_python.start(launch("r-y", tmp_path))


async def test_a_replica_that_never_listens_stays_starting(make_backend, tmp_path):
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    backend = make_backend(command=sleeper, health_timeout=0.2)
    await backend.start(launch("r-mute", tmp_path))
    replica = await observed(backend, "r-mute")
    assert replica.state == ReplicaState.STARTING and replica.url is None


def test_health_timeout_must_be_positive(home):
    with pytest.raises(ValueError, match="health_timeout"):
        LocalBackend(home, health_timeout=0)
