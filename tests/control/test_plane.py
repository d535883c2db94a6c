"""The control loop over a stand-in reconciler: status transitions, promotion timing, rollback, errors."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tests.control.conftest import ScriptedReconciler, package


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


# -- metric sampling ---------------------------------------------------------------------------------

class ReplicaMetricsServer:
    """A real HTTP server on 127.0.0.1 answering GET /metrics with a replica's metric families."""

    def __init__(self, *, delay: float = 0.0) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from slipway.server.metrics import ReplicaMetrics

        self.metrics = ReplicaMetrics()
        self.delay = delay
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                time.sleep(owner.delay)
                body = owner.metrics.render()
                try:
                    self.send_response(200 if self.path == "/metrics" else 404)
                    self.send_header("Content-Type", owner.metrics.content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the control plane gave up waiting, as it should

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def replica_server():
    server = ReplicaMetricsServer()
    yield server
    server.close()


def pointing_plane(store, backend, home, url: str, *, started_at: float | None = None, **kwargs):
    """A plane whose stand-in replicas all answer at `url` (and all started at `started_at`, if given)."""
    from slipway.control import ControlPlane

    class PointingReconciler(ScriptedReconciler):
        async def tick(self, desired, now):
            report = await super().tick(desired, now)
            changes = {"url": url} if started_at is None else {"url": url, "started_at": started_at}
            report.replicas = [r.model_copy(update=changes) if r.url else r for r in report.replicas]
            return report

    return ControlPlane(store, backend, home=home, reconciler=PointingReconciler(), **kwargs)


async def test_each_tick_samples_requests_latency_and_replicas_from_the_replicas(store, backend, home,
                                                                                replica_server):
    plane = pointing_plane(store, backend, home, replica_server.url)
    workspace, _ = plane.bootstrap()
    deployment = plane.deploy(workspace.id, package()).deployment
    await plane.tick(1.0)                                    # starting: not read yet
    for _ in range(3):
        replica_server.metrics.observe("predict", 200, 0.02)
    replica_server.metrics.observe("predict", 500, 0.02)
    await plane.tick(2.0)                                    # ready: its /metrics read in the background
    await plane.sampler.wait_for_round()
    await plane.tick(3.0)                                    # what was read lands in this sample
    [point] = plane.history.series(deployment.id, 0.0, 3.0)
    assert point.requests_per_second == pytest.approx(4 / 3)  # 4 requests over the 3 s the bucket covers
    assert point.error_rate == 0.25
    assert 0.01 < point.latency_p50_seconds <= 0.025
    assert (point.replicas_ready, point.replicas_desired) == (1, 1)
    assert point.in_flight == 0.0                             # no gateway load: the replicas' own gauge
    await plane.shutdown(stop_replicas=False)


async def test_a_replica_seen_for_the_first_time_after_a_restart_only_sets_the_baseline(store, backend, home,
                                                                                       replica_server):
    for _ in range(50):                                      # served before this control plane started
        replica_server.metrics.observe("predict", 200, 0.02)
    plane = pointing_plane(store, backend, home, replica_server.url, started_at=50.0)  # adopted
    workspace, _ = plane.bootstrap()
    deployment = plane.deploy(workspace.id, package()).deployment
    await plane.tick(101.0)
    await plane.tick(102.0)
    await plane.sampler.wait_for_round()                     # the baseline: 50
    replica_server.metrics.observe("predict", 200, 0.02)
    await plane.tick(103.5)
    await plane.sampler.wait_for_round()
    await plane.tick(104.0)
    [point] = plane.history.series(deployment.id, 0, 104.0)
    assert point.requests_per_second == pytest.approx(1 / 4)  # 1 request over the 4 s sampled, not 51
    await plane.shutdown(stop_replicas=False)


async def test_a_hanging_replica_does_not_hold_up_the_tick(store, backend, home):
    from slipway.control.sampler import MetricSampler, SamplerConfig

    server = ReplicaMetricsServer(delay=1.0)
    try:
        plane = pointing_plane(store, backend, home, server.url,
                               sampler=MetricSampler(config=SamplerConfig(scrape_timeout=0.2)))
        workspace, _ = plane.bootstrap()
        plane.deploy(workspace.id, package())
        await plane.tick(1.0)
        started = time.perf_counter()
        await plane.tick(2.0)                                # starts reading the hanging replica
        await plane.tick(3.0)
        assert time.perf_counter() - started < 0.5
        await plane.sampler.wait_for_round()
        page = plane.render_metrics().decode()
        assert "slipway_control_replica_scrape_failures_total 1.0" in page
        await plane.shutdown(stop_replicas=False)
    finally:
        server.close()


async def test_in_flight_and_queued_come_from_the_gateway_load_the_autoscaler_pulled(plane, workspace):
    from slipway.control.autoscaler import Autoscaler, InProcessLoadSource

    deployment = plane.deploy(workspace.id, package()).deployment
    plane.autoscaler = Autoscaler(InProcessLoadSource(
        lambda: {"deployments": {deployment.id: {"in_flight": 6, "queued": 2}}}))
    await plane.tick(1.0)
    await plane.tick(2.0)
    points = plane.history.series(deployment.id, 0.0, 2.0)
    assert [(p.in_flight, p.queued) for p in points] == [(6.0, 2.0)]


async def test_every_tick_is_timed_and_failures_are_counted(plane, workspace, reconciler):
    async def broken_tick(desired, now):
        raise RuntimeError("backend hiccup")

    plane.deploy(workspace.id, package())
    await plane.tick(1.0)
    reconciler.tick = broken_tick
    task = asyncio.create_task(plane.run_forever(interval=0.01))
    try:
        for _ in range(100):
            await asyncio.sleep(0.01)
            if _metric(plane, "slipway_control_reconcile_tick_failures_total") >= 2:
                break
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    failures = _metric(plane, "slipway_control_reconcile_tick_failures_total")
    assert failures >= 2
    # The good tick and every failed one were timed.
    assert _metric(plane, "slipway_control_reconcile_tick_duration_seconds_count") >= failures + 1


def _metric(plane, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    page = plane.render_metrics().decode()
    return sum(s.value for f in text_string_to_metric_families(page) for s in f.samples if s.name == name)


async def test_a_starting_replica_is_polled_often_until_ready(plane, workspace, reconciler):
    """A cold start waits on the replica's readiness reaching the gateway: while a replica starts,
    the loop ticks every starting_tick_interval, not every tick_interval."""
    plane.config = plane.config.model_copy(update={"starting_tick_interval": 0.05})
    task = asyncio.create_task(plane.run_forever(interval=30))
    try:
        for _ in range(100):  # the first tick, with nothing to run
            await asyncio.sleep(0.01)
            if reconciler.desired_seen:
                break
        deployment = await asyncio.to_thread(plane.deploy, workspace.id, package())  # wakes: replica starting
        started = time.monotonic()
        for _ in range(300):
            await asyncio.sleep(0.01)
            if _status(plane, deployment.deployment.id) == "active":
                break
        assert _status(plane, deployment.deployment.id) == "active"
        assert time.monotonic() - started < 2, "readiness came from a fast tick, not after the 30 s interval"
        ticks = len(reconciler.desired_seen)
        await asyncio.sleep(0.3)
        assert len(reconciler.desired_seen) == ticks, "no replica starts: back to the 30 s interval"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
