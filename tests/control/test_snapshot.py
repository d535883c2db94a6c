"""The routing snapshot: what it holds, and long-poll waits that wake on a newer version."""

from __future__ import annotations

import asyncio
import threading
import time

from slipway.control.snapshot import SnapshotPublisher, build_snapshot
from slipway.spec.replica import ReplicaObservation, ReplicaState
from slipway.spec.snapshot import RoutingSnapshot
from slipway.store.repositories.fine_tuning import CheckpointRecord
from tests.control.conftest import package


def test_snapshot_holds_keys_models_environments_and_live_replicas(plane, workspace):
    deployment = plane.deploy(workspace.id, package(), promote=True).deployment
    invoke = plane.create_key(workspace.id, name="", scopes=["invoke"], models=["echo"])
    revoked = plane.create_key(workspace.id, name="", scopes=["invoke"], models=None)
    plane.revoke_key(workspace.id, revoked.row.id)
    plane.store.replicas.sync([
        ReplicaObservation(replica_id="r-1", deployment_id=deployment.id, state=ReplicaState.READY,
                           url="http://127.0.0.1:9001"),
        ReplicaObservation(replica_id="r-2", deployment_id=deployment.id, state=ReplicaState.STARTING,
                           url="http://127.0.0.1:9002"),
        ReplicaObservation(replica_id="r-3", deployment_id=deployment.id, state=ReplicaState.CRASHED),
    ], now=5.0)
    snapshot = build_snapshot(plane.store)
    assert snapshot.version == plane.store.state.version()
    keys = {k.key_id: k for k in snapshot.keys}
    assert invoke.row.id in keys and revoked.row.id not in keys
    assert keys[invoke.row.id].models == ["echo"] and keys[invoke.row.id].key_hash == invoke.row.key_hash
    [model] = snapshot.models
    assert (model.workspace_id, model.name, model.environments) == (workspace.id, "echo", {"production": deployment.id})
    [entry] = snapshot.deployments
    assert (entry.deployment_id, entry.model_name, entry.number, entry.kind, entry.status) == (
        deployment.id, "echo", 1, "custom", "deploying")
    assert entry.workspace_id == workspace.id
    assert [(r.replica_id, r.ready) for r in entry.replicas] == [("r-1", True), ("r-2", False)]


def test_inactive_deployments_appear_only_while_an_environment_points_at_them(plane, workspace):
    deployment = plane.deploy(workspace.id, package(), promote=True).deployment
    plane.deactivate(workspace.id, deployment.id)
    assert [d.status for d in build_snapshot(plane.store).deployments] == ["inactive"]


def test_publish_ignores_older_versions():
    publisher = SnapshotPublisher()
    assert publisher.publish(RoutingSnapshot(version=3))
    assert not publisher.publish(RoutingSnapshot(version=2))
    assert publisher.current().version == 3


async def test_wait_newer_returns_at_once_when_newer_exists():
    publisher = SnapshotPublisher(RoutingSnapshot(version=5))
    started = time.monotonic()
    assert (await publisher.wait_newer(4, timeout=10)).version == 5
    assert time.monotonic() - started < 1


async def test_wait_newer_wakes_on_publish_from_another_thread():
    publisher = SnapshotPublisher(RoutingSnapshot(version=1))
    threading.Timer(0.05, publisher.publish, args=(RoutingSnapshot(version=2),)).start()
    started = time.monotonic()
    assert (await publisher.wait_newer(1, timeout=10)).version == 2
    assert time.monotonic() - started < 5


async def test_wait_newer_times_out_with_the_current_one():
    publisher = SnapshotPublisher(RoutingSnapshot(version=1))
    assert (await publisher.wait_newer(1, timeout=0.05)).version == 1
    assert publisher._waiters == []


async def test_many_waiters_all_wake():
    publisher = SnapshotPublisher(RoutingSnapshot(version=1))
    waits = [asyncio.create_task(publisher.wait_newer(1, timeout=10)) for _ in range(5)]
    await asyncio.sleep(0.01)
    publisher.publish(RoutingSnapshot(version=7))
    assert [s.version for s in await asyncio.gather(*waits)] == [7] * 5


def test_a_succeeded_fine_tuning_job_publishes_its_model_as_an_adapter_of_the_base(plane, workspace, tmp_path):
    plane.deploy(workspace.id, package(), promote=True)
    store = plane.store
    job = store.fine_tuning.create_job(workspace.id, model="echo", training_file="ds-1", hyperparameters={},
                                       seed=0, now=1.0, status="running", job_dir=str(tmp_path / "ftjob"))
    running = build_snapshot(store)
    assert [m.name for m in running.models] == ["echo"], "nothing is published before the job succeeds"
    with store.transaction() as tx:
        tx.fine_tuning.transition(job.id, "succeeded", 2.0, expected=("running",), fine_tuned_model="echo:ft-x")
        tx.models.ensure(workspace.id, "echo:ft-x", 2.0)
        tx.state.bump()
    models = {m.name: m for m in build_snapshot(store).models}
    assert models["echo"].adapter is None
    adapter = models["echo:ft-x"].adapter
    assert adapter is not None and adapter.base_model == "echo"
    assert adapter.path == str(tmp_path / "ftjob" / "adapter")
    assert models["echo:ft-x"].environments == {}
    assert store.fine_tuning.get_by_fine_tuned_model(workspace.id, "echo:ft-x").id == job.id
    assert store.fine_tuning.get_by_fine_tuned_model("another-workspace", "echo:ft-x") is None

    # Its kept checkpoints are published as adapters of the base too, under OpenAI's checkpoint names.
    store.fine_tuning.sync_checkpoints(job.id, [
        CheckpointRecord(step=step, metrics={}, path=str(tmp_path / "ftjob" / "checkpoints" / f"step-{step}"),
                         created_at=2.0) for step in (4, 8)])
    models = {m.name: m for m in build_snapshot(store).models}
    checkpoint = models["echo:ft-x:ckpt-step-8"]
    assert checkpoint.workspace_id == workspace.id and checkpoint.environments == {}
    assert checkpoint.adapter.base_model == "echo"
    assert checkpoint.adapter.path == str(tmp_path / "ftjob" / "checkpoints" / "step-8" / "adapter")
    assert "echo:ft-x:ckpt-step-4" in models
