"""The control loop over a stand-in reconciler: status transitions, promotion timing, rollback, errors."""

from __future__ import annotations

import asyncio

import pytest

from tests.control.conftest import package


def _env(plane, workspace, name, model="echo"):
    model_row = plane.store.models.get(workspace.id, model)
    return plane.store.environments.get(model_row.id, name)


def _status(plane, deployment_id):
    return plane.store.deployments.get(deployment_id).status


async def test_new_deployment_is_deploying_until_a_replica_is_ready(plane, workspace, reconciler):
    deployment = plane.deploy(workspace.id, package()).deployment
    assert await plane.tick(1.0) is True          # replica starting
    assert _status(plane, deployment.id) == "deploying"
    [desired] = reconciler.desired_seen[-1]
    assert (desired.deployment_id, desired.replicas, desired.package_dir) == (deployment.id, 1, deployment.package_dir)
    assert await plane.tick(2.0) is True          # replica ready
    assert _status(plane, deployment.id) == "active"
    [replica] = plane.store.replicas.list(deployment.id)
    assert replica.state == "ready" and replica.url.startswith("http://127.0.0.1:")
    assert await plane.tick(3.0) is False         # nothing changed
    snapshot = plane.snapshots.current()
    [entry] = snapshot.deployments
    assert entry.status == "active" and [r.ready for r in entry.replicas] == [True]
    assert snapshot.version == plane.store.state.version()


async def test_load_failure_marks_failed_with_the_reason_and_stops_asking(plane, workspace, reconciler):
    deployment = plane.deploy(workspace.id, package(), promote=True).deployment
    reconciler.failing.add(deployment.id)
    await plane.tick(1.0)
    failed = plane.store.deployments.get(deployment.id)
    assert failed.status == "failed" and failed.desired_replicas == 0
    assert "Traceback" in failed.status_detail and "weights are corrupt" in failed.status_detail
    await plane.tick(2.0)
    assert reconciler.desired_seen[-1] == []      # no longer desired: never restarted
    assert [r.state for r in plane.store.replicas.list(deployment.id)] == ["failed"]


async def test_promotion_retires_the_old_deployment_only_after_the_new_one_is_ready(plane, workspace):
    old = plane.deploy(workspace.id, package(), promote=True).deployment
    await plane.tick(1.0)
    await plane.tick(2.0)
    assert _status(plane, old.id) == "active"

    new = plane.deploy(workspace.id, package(), promote=True).deployment
    production = _env(plane, workspace, "production")
    assert (production.deployment_id, production.pending_deployment_id) == (old.id, new.id)
    assert plane.snapshots.current().models[0].environments["production"] == old.id

    await plane.tick(3.0)                          # new replica only starting: old keeps serving
    assert _env(plane, workspace, "production").deployment_id == old.id
    assert _status(plane, old.id) == "active"
    assert plane.store.deployments.get(old.id).desired_replicas == 1

    await plane.tick(4.0)                          # new replica ready: switch, retire old
    production = _env(plane, workspace, "production")
    assert (production.deployment_id, production.pending_deployment_id) == (new.id, None)
    retired = plane.store.deployments.get(old.id)
    assert (retired.status, retired.desired_replicas) == ("inactive", 0)
    assert plane.snapshots.current().models[0].environments["production"] == new.id
    await plane.tick(5.0)
    assert plane.store.replicas.list(old.id) == []  # its replica was stopped


async def test_failed_promotion_keeps_the_old_deployment_serving(plane, workspace, reconciler):
    old = plane.deploy(workspace.id, package(), promote=True).deployment
    await plane.tick(1.0)
    await plane.tick(2.0)
    new = plane.deploy(workspace.id, package(), promote=True).deployment
    reconciler.failing.add(new.id)
    await plane.tick(3.0)
    production = _env(plane, workspace, "production")
    assert (production.deployment_id, production.pending_deployment_id) == (old.id, None)
    assert _status(plane, old.id) == "active" and _status(plane, new.id) == "failed"


async def test_deployment_used_by_another_environment_is_not_retired(plane, workspace):
    first = plane.deploy(workspace.id, package()).deployment           # development
    await plane.tick(1.0)
    await plane.tick(2.0)
    plane.promote(workspace.id, "echo", "production", number=1)        # active: switches at once
    assert _env(plane, workspace, "production").deployment_id == first.id
    second = plane.deploy(workspace.id, package()).deployment          # development again
    await plane.tick(3.0)
    await plane.tick(4.0)
    assert _env(plane, workspace, "development").deployment_id == second.id
    assert _status(plane, first.id) == "active"                        # production still uses it


async def test_rollback_brings_the_previous_deployment_back(plane, workspace):
    first = plane.deploy(workspace.id, package(), promote=True).deployment
    await plane.tick(1.0)
    await plane.tick(2.0)
    second = plane.deploy(workspace.id, package(), promote=True).deployment
    await plane.tick(3.0)
    await plane.tick(4.0)
    assert _status(plane, first.id) == "inactive"

    environment, target = plane.rollback(workspace.id, "echo", "production")
    assert target.id == first.id and target.status == "deploying" and target.desired_replicas == 1
    assert (environment.deployment_id, environment.pending_deployment_id) == (second.id, first.id)
    await plane.tick(5.0)
    await plane.tick(6.0)
    production = _env(plane, workspace, "production")
    assert production.deployment_id == first.id
    assert _status(plane, first.id) == "active" and _status(plane, second.id) == "inactive"


async def test_scale_changes_desired_replicas(plane, workspace, reconciler):
    deployment = plane.deploy(workspace.id, package()).deployment
    plane.scale(workspace.id, deployment.id, 3)
    await plane.tick(1.0)
    assert reconciler.desired_seen[-1][0].replicas == 3
    assert len(plane.store.replicas.list(deployment.id)) == 3


async def test_run_forever_keeps_going_after_a_failing_tick(plane, workspace, reconciler, caplog):
    calls = {"n": 0}
    real_tick = reconciler.tick

    async def flaky_tick(desired, now):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("backend hiccup")
        return await real_tick(desired, now)

    reconciler.tick = flaky_tick
    deployment = plane.deploy(workspace.id, package()).deployment
    task = asyncio.create_task(plane.run_forever(interval=0.01))
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if _status(plane, deployment.id) == "active":
                break
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert reconciler.started and calls["n"] >= 3
    assert _status(plane, deployment.id) == "active"
    assert "backend hiccup" in caplog.text


async def test_change_wakes_the_loop_before_the_interval(plane, workspace, reconciler):
    task = asyncio.create_task(plane.run_forever(interval=30))
    try:
        for _ in range(100):
            await asyncio.sleep(0.01)
            if reconciler.desired_seen:
                break
        deployment = await asyncio.to_thread(plane.deploy, workspace.id, package())
        for _ in range(200):
            await asyncio.sleep(0.01)
            if reconciler.desired_seen and reconciler.desired_seen[-1]:
                break
        assert reconciler.desired_seen[-1][0].deployment_id == deployment.deployment.id
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_shutdown_passes_stop_replicas_and_closes_the_backend(plane, workspace, reconciler, backend):
    deployment = plane.deploy(workspace.id, package()).deployment
    await plane.tick(1.0)
    await plane.tick(2.0)
    await plane.shutdown(stop_replicas=True)
    assert reconciler.shutdown_with is True and backend.closed
    assert plane.store.replicas.list_live() == []
    assert [r.state for r in plane.store.replicas.list(deployment.id, include_stopped=True)] == ["stopped"]


async def test_shutdown_keeping_replicas_leaves_their_rows(plane, workspace, reconciler):
    plane.deploy(workspace.id, package())
    await plane.tick(1.0)
    await plane.shutdown(stop_replicas=False)
    assert reconciler.shutdown_with is False and len(plane.store.replicas.list_live()) == 1


async def test_gateways_know_the_ready_replica_before_the_deployment_reads_active(plane, workspace):
    """A client that waits for "active" and then calls the model must find a gateway that can route it."""
    deployment = plane.deploy(workspace.id, package(), promote=True).deployment
    seen: list[tuple[str, bool]] = []   # (status in the store, replica ready in the snapshot) at each publish
    publish = plane.publish

    def watching_publish():
        snapshot = publish()
        entry = next((d for d in snapshot.deployments if d.deployment_id == deployment.id), None)
        ready = entry is not None and any(r.ready for r in entry.replicas)
        seen.append((plane.store.deployments.get(deployment.id).status, ready))
        return snapshot

    plane.publish = watching_publish
    await plane.tick(1.0)                          # replica starting
    await plane.tick(2.0)                          # replica ready
    assert _status(plane, deployment.id) == "active"
    first_ready = next(status for status, ready in seen if ready)
    assert first_ready == "deploying", seen
    assert plane.snapshots.current().models[0].environments["production"] == deployment.id
