"""Fixtures for control-plane tests: a real store, a stand-in reconciler, packages as tarballs.

`ScriptedReconciler` stands for the reconciler and the processes behind it: each tick it keeps
the desired number of replicas per deployment in memory; a new replica is STARTING on the tick it
appears and READY on the next, unless its deployment is in `failing` (then it is FAILED and the
deployment is reported failed with a traceback). Tests drive time by calling `plane.tick(now)`.
"""

from __future__ import annotations

import io
import tarfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pytest
from fastapi.testclient import TestClient

from slipway.control.reconciler import ReconcileReport
from slipway.spec.replica import ReplicaObservation, ReplicaState


ECHO_YAML = "name: echo\nkind: custom\nautoscaling: {min_replica: 1, max_replica: 3}\n"
ECHO_MODEL = "class Model:\n    def load(self):\n        pass\n\n    def predict(self, request):\n        return request\n"


class ScriptedReconciler:
    """In-memory replicas that follow the desired counts; see the module docstring."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.replicas: dict[str, ReplicaObservation] = {}
        self.desired_seen: list[list] = []
        self.started = False
        self.shutdown_with: bool | None = None
        self._counter = 0

    async def start(self) -> None:
        self.started = True

    async def tick(self, desired: Sequence, now: float):
        self.desired_seen.append(list(desired))
        before = dict(self.replicas)
        wanted = {d.deployment_id: d.replicas for d in desired}
        failed: dict[str, str] = {}
        for replica_id, replica in list(self.replicas.items()):
            if replica.deployment_id not in wanted:
                del self.replicas[replica_id]
            elif replica.state == ReplicaState.STARTING:
                self.replicas[replica_id] = replica.model_copy(update={"state": ReplicaState.READY})
        for deployment_id, count in wanted.items():
            mine = [r for r in self.replicas.values() if r.deployment_id == deployment_id]
            for extra in mine[count:]:
                del self.replicas[extra.replica_id]
            for _ in range(count - len(mine)):
                self._counter += 1
                replica_id = f"r-{self._counter:04d}"
                if deployment_id in self.failing:
                    self.replicas[replica_id] = ReplicaObservation(
                        replica_id=replica_id, deployment_id=deployment_id, state=ReplicaState.FAILED,
                        exit_code=3, started_at=now, detail="load() raised")
                else:
                    self.replicas[replica_id] = ReplicaObservation(
                        replica_id=replica_id, deployment_id=deployment_id, state=ReplicaState.STARTING,
                        url=f"http://127.0.0.1:{20000 + self._counter}", pid=1000 + self._counter, started_at=now)
        for replica in self.replicas.values():
            if replica.state == ReplicaState.FAILED:
                failed[replica.deployment_id] = "Traceback (most recent call last):\nRuntimeError: weights are corrupt"
        return ReconcileReport(replicas=list(self.replicas.values()), failed=failed, changed=self.replicas != before)

    async def shutdown(self, *, stop_replicas: bool) -> None:
        self.shutdown_with = stop_replicas


class LogBackend:
    """The backend calls the control plane makes itself: logs and close (the reconciler does the rest)."""

    name = "memory"

    def __init__(self) -> None:
        self.closed = False
        self.log_lines: dict[str, list[str]] = {}

    async def logs(self, replica_id: str, *, tail: int = 200) -> str:
        if replica_id not in self.log_lines:
            raise KeyError(replica_id)
        return "\n".join(self.log_lines[replica_id][-tail:])

    async def close(self) -> None:
        self.closed = True


def tarball(files: dict[str, str | bytes], *, extra: Sequence[tarfile.TarInfo] = ()) -> bytes:
    """A .tar.gz holding `files` (path -> content) and any hand-made `extra` members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for info in extra:
            archive.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buffer.getvalue()


def package(yaml: str = ECHO_YAML, model: str | None = ECHO_MODEL, **more: str) -> bytes:
    files = {"slipway.yaml": textwrap.dedent(yaml)}
    if model is not None:
        files["model.py"] = model
    files.update(more)
    return tarball(files)


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def store(home):
    from slipway.store import Store

    opened = Store.open(None, home)
    yield opened
    opened.close()


@pytest.fixture
def reconciler() -> ScriptedReconciler:
    return ScriptedReconciler()


@pytest.fixture
def backend() -> LogBackend:
    return LogBackend()


@pytest.fixture
def plane(store, backend, reconciler, home):
    from slipway.control import ControlPlane

    return ControlPlane(store, backend, home=home, reconciler=reconciler)


@pytest.fixture
def bootstrapped(plane):
    """(default workspace, its admin key secret)."""
    return plane.bootstrap()


@pytest.fixture
def workspace(bootstrapped):
    return bootstrapped[0]


@dataclass
class Api:
    """A TestClient of the management API with the bootstrap admin key."""

    client: TestClient
    admin_key: str
    plane: object
    headers: dict[str, str] = field(default_factory=dict)

    def as_key(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    def request(self, method: str, path: str, *, key: str | None = "admin", **kwargs):
        secret = self.admin_key if key == "admin" else key
        return self.client.request(method, path, headers={**self.as_key(secret), **kwargs.pop("headers", {})},
                                   **kwargs)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def patch(self, path, **kw):
        return self.request("PATCH", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def deploy(self, body: bytes | None = None, **params):
        return self.post("/api/v1/deployments", content=body if body is not None else package(), params=params,
                         headers={"Content-Type": "application/gzip"})


@pytest.fixture
def api(plane, bootstrapped):
    from slipway.control import create_control_app

    admin_key = bootstrapped[1]
    with TestClient(create_control_app(plane), raise_server_exceptions=False) as client:
        yield Api(client=client, admin_key=admin_key, plane=plane)
