"""The control loop with the real Reconciler over an in-memory Backend (standing for processes).

The fake backend keeps replicas in a dict: a started replica is STARTING, and READY at the next
observe; a replica of a package whose folder holds `load_fails` is FAILED with the load
traceback, the way the local backend reports exit code EXIT_LOAD_FAILED.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from slipway.backends.base import Backend
from slipway.control import ControlPlane
from slipway.control.reconciler import Reconciler
from slipway.spec.replica import ReplicaLaunch, ReplicaObservation, ReplicaState
from tests.control.conftest import package


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self) -> None:
        self.replicas: dict[str, ReplicaObservation] = {}
        self.launches: list[ReplicaLaunch] = []
        self.port = 30000

    async def start(self, launch: ReplicaLaunch) -> ReplicaObservation:
        self.launches.append(launch)
        self.port += 1
        replica = ReplicaObservation(replica_id=launch.replica_id, deployment_id=launch.deployment_id,
                                     url=f"http://127.0.0.1:{self.port}", state=ReplicaState.STARTING,
                                     pid=self.port, started_at=1.0)
        self.replicas[launch.replica_id] = replica
        return replica

    async def stop(self, replica_id: str, *, drain_timeout: float = 30.0) -> None:
        if replica_id in self.replicas:
            self.replicas[replica_id] = self.replicas[replica_id].model_copy(update={"state": ReplicaState.STOPPED})

    async def observe(self) -> list[ReplicaObservation]:
        for replica_id, replica in list(self.replicas.items()):
            if replica.state != ReplicaState.STARTING:
                continue
            launch = next(launch for launch in self.launches if launch.replica_id == replica_id)
            if (Path(launch.package_dir) / "load_fails").exists():
                self.replicas[replica_id] = replica.model_copy(update={
                    "state": ReplicaState.FAILED, "exit_code": 3,
                    "detail": "Traceback (most recent call last):\nRuntimeError: weights are corrupt"})
            else:
                self.replicas[replica_id] = replica.model_copy(update={"state": ReplicaState.READY})
        return list(self.replicas.values())

    async def forget(self, replica_id: str) -> None:
        self.replicas.pop(replica_id, None)

    async def logs(self, replica_id: str, *, tail: int = 200) -> str:
        return "RuntimeError: weights are corrupt" if replica_id in self.replicas else ""

    async def close(self) -> None:
        pass


@pytest.fixture
def real_plane(store, home):
    backend = MemoryBackend()
    plane = ControlPlane(store, backend, home=home, reconciler=Reconciler(backend))
    plane.bootstrap()
    return plane


async def _ticks(plane, count: int, start: float = 1.0) -> None:
    for i in range(count):
        await plane.tick(start + i)


def _status(plane, deployment_id: str) -> str:
    return plane.store.deployments.get(deployment_id).status


async def test_deployment_becomes_active(real_plane):
    await real_plane.start()
    workspace = real_plane.store.workspaces.get_by_name("default")
    deployment = real_plane.deploy(workspace.id, package(), promote=True).deployment
    await _ticks(real_plane, 4)
    assert _status(real_plane, deployment.id) == "active"
    assert [r.state for r in real_plane.store.replicas.list(deployment.id)] == ["ready"]


async def test_load_failure_marks_failed_and_is_not_restarted(real_plane):
    await real_plane.start()
    workspace = real_plane.store.workspaces.get_by_name("default")
    deployment = real_plane.deploy(workspace.id, package(load_fails="1"), promote=True).deployment
    await _ticks(real_plane, 6)
    failed = real_plane.store.deployments.get(deployment.id)
    assert failed.status == "failed" and "weights are corrupt" in failed.status_detail
    assert len(real_plane.backend.launches) == 1


async def test_promotion_retires_the_old_deployment_after_the_new_is_ready(real_plane):
    await real_plane.start()
    workspace = real_plane.store.workspaces.get_by_name("default")
    old = real_plane.deploy(workspace.id, package(), promote=True).deployment
    await _ticks(real_plane, 4)
    new = real_plane.deploy(workspace.id, package(), promote=True).deployment
    model = real_plane.store.models.get(workspace.id, "echo")
    for i in range(10):
        production = real_plane.store.environments.get(model.id, "production")
        if production.deployment_id == new.id:
            break
        assert _status(real_plane, old.id) == "active"      # still serving while the new one starts
        await real_plane.tick(10.0 + i)
    assert _status(real_plane, new.id) == "active" and _status(real_plane, old.id) == "inactive"
