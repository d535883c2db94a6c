"""The local backend: each replica is a `python -m slipway.server` subprocess on this machine.

    start(launch)
      └─ spawn in its own session (a Ctrl-C in the control plane's terminal does not reach it),
         cwd = package dir, output appended to logs/replicas/<id>.log,
         record (pid, start time, port file, ...) written to run/replicas/<id>.json
    observe()
      ├─ exited?  own child: waitid without reaping, kill what is left of its group, reap
      │           adopted:   /proc says gone or zombie (its exit code is unknown: CRASHED)
      ├─ port file read once the replica listens
      └─ GET /health/ready on every live replica at once, each with `health_timeout`
    stop(id)     SIGTERM to the group, wait up to drain_timeout, SIGKILL, wait, reap
    LocalBackend(home) on a home with records adopts those whose (pid, start time) still runs
                 and removes the rest: a restarted control plane finds its replicas again.

Only one LocalBackend may manage a home at a time; a second one would adopt the first one's
replicas and both would act on them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import httpx

from slipway.backends import processes
from slipway.backends.base import Backend
from slipway.backends.registry import Registry, ReplicaRecord, check_replica_id
from slipway.errors import BackendError, ConflictError, NotFoundError
from slipway.spec.replica import EXIT_LOAD_FAILED, ReplicaLaunch, ReplicaObservation, ReplicaState

log = logging.getLogger(__name__)

# How long to wait for the kernel to finish a process after SIGKILL before calling it stuck.
_KILL_WAIT_SECONDS = 5.0
_POLL_FIRST_SECONDS = 0.01
_POLL_MAX_SECONDS = 0.1


@dataclass
class _Replica:
    """The backend's view of one replica process."""

    record: ReplicaRecord
    popen: subprocess.Popen | None
    """The child handle when this backend spawned it; None when adopted from an earlier control plane."""
    state: ReplicaState = ReplicaState.STARTING
    url: str | None = None
    exit_code: int | None = None
    detail: str = ""
    stop_requested: bool = False
    exited: bool = False

    def observation(self) -> ReplicaObservation:
        return ReplicaObservation(
            replica_id=self.record.replica_id, deployment_id=self.record.deployment_id, url=self.url,
            state=self.state, pid=self.record.pid, exit_code=self.exit_code, started_at=self.record.started_at,
            detail=self.detail,
        )


class LocalBackend(Backend):
    """Replicas as subprocesses of this machine, registered under `home` (see the module docstring)."""

    name = "local"

    def __init__(self, home: Path, *, python: str = sys.executable, health_timeout: float = 1.0,
                 command: Sequence[str] | None = None) -> None:
        """
        home: the slipway home ($SLIPWAY_HOME); records go to run/replicas/, logs to logs/replicas/.
        python: the interpreter that runs `-m slipway.server`.
        health_timeout: seconds one GET /health/ready may take before the replica counts as not ready.
        command: the argv that starts a replica, before the --package/--port/--port-file/--replica-id
            flags; defaults to [python, "-m", "slipway.server"].
        """
        if health_timeout <= 0:
            raise ValueError(f"health_timeout must be positive seconds, got {health_timeout}")
        self.home = Path(home)
        self.registry = Registry(self.home)
        self.command = list(command) if command is not None else [python, "-m", "slipway.server"]
        self.health_timeout = health_timeout
        self._replicas: dict[str, _Replica] = {}
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._adopt()

    # The contract -----------------------------------------------------------------------
    async def start(self, launch: ReplicaLaunch) -> ReplicaObservation:
        replica_id = check_replica_id(launch.replica_id)
        if replica_id in self._replicas:
            raise ConflictError(f"replica {replica_id!r} already exists; start it under a new id")
        package_dir = Path(launch.package_dir)
        if not package_dir.is_dir():
            raise BackendError(f"cannot start replica {replica_id}: package folder {package_dir} does not exist; "
                               "redeploy the package")
        port_file = self.registry.port_path(replica_id)
        port_file.unlink(missing_ok=True)
        log_file = self.registry.log_path(replica_id)
        argv = [*self.command, "--package", str(package_dir), "--port", "0", "--port-file", str(port_file),
                "--replica-id", replica_id]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **launch.env, "SLIPWAY_REPLICA_ID": replica_id}
        started_at = time.time()
        try:
            with open(log_file, "ab") as output:
                output.write(f"--- slipway: starting replica {replica_id} of deployment {launch.deployment_id} "
                             f"at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(started_at))}\n".encode())
                output.flush()
                popen = subprocess.Popen(argv, cwd=package_dir, env=env, stdin=subprocess.DEVNULL, stdout=output,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise BackendError(f"cannot start replica {replica_id}: {exc}; check that {self.command[0]!r} "
                               "is a Python interpreter with slipway installed") from exc
        ticks = processes.start_ticks(popen.pid)
        record = ReplicaRecord(
            replica_id=replica_id, deployment_id=launch.deployment_id, pid=popen.pid,
            pid_start_ticks=ticks if ticks is not None else -1, port_file=str(port_file),
            package_dir=str(package_dir), log_file=str(log_file), started_at=started_at,
        )
        replica = _Replica(record=record, popen=popen, detail="launched")
        self._replicas[replica_id] = replica
        try:
            self.registry.write(record)
        except OSError as exc:
            # Unregistered, it would be orphaned by the next control plane: do not let it run.
            await self._kill_now(replica)
            del self._replicas[replica_id]
            raise BackendError(f"cannot record replica {replica_id} under {self.registry.run_dir}: {exc}; "
                               "check that the slipway home is writable") from exc
        log.info("replica started", extra={"replica_id": replica_id, "deployment_id": launch.deployment_id,
                                           "pid": popen.pid})
        return replica.observation()

    async def stop(self, replica_id: str, *, drain_timeout: float = 30.0) -> None:
        replica = self._replicas.get(replica_id)
        if replica is None or self._check_exit(replica):
            return
        if not replica.stop_requested:
            # Only once: the replica server treats a second SIGTERM as "exit now, skip the drain".
            replica.stop_requested = True
            replica.state, replica.detail = ReplicaState.DRAINING, "stop requested; draining"
            self._signal(replica, signal.SIGTERM)
        if await self._wait_exit(replica, drain_timeout):
            return
        log.warning("replica did not exit within its drain timeout; killing it",
                    extra={"replica_id": replica_id, "drain_timeout": drain_timeout})
        await self._kill_now(replica)

    async def observe(self) -> list[ReplicaObservation]:
        live = [r for r in self._replicas.values() if not self._check_exit(r)]
        for replica in live:
            if replica.url is None:
                port = self.registry.read_port(replica.record.replica_id)
                if port is not None:
                    replica.url = f"http://127.0.0.1:{port}"
        probed = [r for r in live if r.url is not None and not r.stop_requested]
        if probed:
            client = self._http()
            await asyncio.gather(*(self._probe(client, r) for r in probed))
        return [r.observation() for r in self._replicas.values()]

    async def forget(self, replica_id: str) -> None:
        replica = self._replicas.get(replica_id)
        if replica is not None and not self._check_exit(replica):
            # Forgetting a live process would orphan it; end it first.
            log.warning("forgetting a live replica; killing it first", extra={"replica_id": replica_id})
            await self._kill_now(replica)
        self._replicas.pop(replica_id, None)
        self.registry.remove(replica_id)

    async def logs(self, replica_id: str, *, tail: int = 200) -> str:
        text = await asyncio.to_thread(self.registry.tail_log, replica_id, max(tail, 0))
        if text is None:
            raise NotFoundError(f"no log for replica {replica_id!r} under {self.registry.log_dir}; "
                                "check the replica id (listings show each replica's id)")
        return text

    async def close(self) -> None:
        for replica in list(self._replicas.values()):
            self._check_exit(replica)  # reap what has exited; live replicas are left for the next control plane
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.aclose()
            except RuntimeError:  # its event loop is gone; nothing left to close
                pass

    # Adoption ----------------------------------------------------------------------------
    def _adopt(self) -> None:
        for record in self.registry.read_all():
            if processes.is_running(record.pid, record.pid_start_ticks):
                self._replicas[record.replica_id] = _Replica(record=record, popen=None, detail="adopted")
                log.info("adopted replica", extra={"replica_id": record.replica_id, "pid": record.pid,
                                                   "deployment_id": record.deployment_id})
            else:
                log.info("removing record of a replica that is gone",
                         extra={"replica_id": record.replica_id, "pid": record.pid})
                self.registry.remove(record.replica_id)

    # Process handling --------------------------------------------------------------------
    def _check_exit(self, replica: _Replica) -> bool:
        """True if the process has exited; the first time, also sweep its group, reap it and set its state."""
        if replica.exited:
            return True
        pid = replica.record.pid
        if replica.popen is not None:
            if not processes.child_exited(pid):
                return False
            # Not reaped yet, so the group id cannot have been reused: end whatever the replica left behind.
            processes.signal_group(pid, signal.SIGKILL)
            try:
                returncode: int | None = replica.popen.wait(timeout=_KILL_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                return False
        else:
            stat = processes.read_stat(pid)
            if stat is not None and stat.start_ticks == replica.record.pid_start_ticks:
                if not stat.exited:
                    return False
                processes.signal_group(pid, signal.SIGKILL)  # a zombie still holds its group id
            returncode = None
        replica.exited = True
        replica.exit_code = returncode
        how = processes.describe_exit(returncode)
        if replica.stop_requested:
            replica.state, replica.detail = ReplicaState.STOPPED, f"stopped; {how}"
        elif returncode == EXIT_LOAD_FAILED:
            replica.state = ReplicaState.FAILED
            replica.detail = f"the package's load() raised ({how}); its log holds the traceback"
        else:
            replica.state, replica.detail = ReplicaState.CRASHED, how
        log.info("replica exited", extra={"replica_id": replica.record.replica_id, "state": replica.state.value,
                                          "exit_code": returncode})
        return True

    def _signal(self, replica: _Replica, sig: signal.Signals) -> None:
        """Signal the replica's whole process group, if the pid is still the replica's."""
        if replica.popen is not None or processes.holds_pid(replica.record.pid, replica.record.pid_start_ticks):
            processes.signal_group(replica.record.pid, sig)

    async def _wait_exit(self, replica: _Replica, timeout: float) -> bool:
        deadline = time.monotonic() + max(timeout, 0.0)
        pause = _POLL_FIRST_SECONDS
        while not self._check_exit(replica):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, _POLL_MAX_SECONDS)
        return True

    async def _kill_now(self, replica: _Replica) -> None:
        replica.stop_requested = True
        self._signal(replica, signal.SIGKILL)
        if not await self._wait_exit(replica, _KILL_WAIT_SECONDS):
            raise BackendError(f"replica {replica.record.replica_id} (pid {replica.record.pid}) survived SIGKILL "
                               f"for {_KILL_WAIT_SECONDS:.0f}s; it may be stuck in the kernel (state D)")

    # Health ------------------------------------------------------------------------------
    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            # trust_env=False: a proxy from the environment must never sit between us and 127.0.0.1.
            self._client = httpx.AsyncClient(timeout=self.health_timeout, trust_env=False,
                                             limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
            self._client_loop = loop
        return self._client

    async def _probe(self, client: httpx.AsyncClient, replica: _Replica) -> None:
        try:
            response = await client.get(f"{replica.url}/health/ready")
        except httpx.HTTPError as exc:
            if replica.stop_requested or replica.exited:
                return
            replica.state = ReplicaState.STARTING
            replica.detail = f"GET /health/ready failed: {type(exc).__name__}"
            return
        if replica.stop_requested or replica.exited:  # changed while the probe was in flight
            return
        if response.status_code == 200:
            replica.state, replica.detail = ReplicaState.READY, ""
            return
        phase = _phase(response)
        if phase == "draining":
            replica.state, replica.detail = ReplicaState.DRAINING, "draining: refuses new work"
        else:
            replica.state = ReplicaState.STARTING
            replica.detail = f"not ready yet ({phase or f'HTTP {response.status_code}'})"


def _phase(response: httpx.Response) -> str | None:
    """The replica's own word for its state, from the /health/ready body."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("state") if isinstance(body, dict) and isinstance(body.get("state"), str) else None
