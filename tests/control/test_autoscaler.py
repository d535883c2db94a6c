"""The autoscaler in the control loop: a fake clock, the real store, a stand-in reconciler, scripted load.

One replica carries exactly 10 requests (concurrency_target 10 at 100%), the window is 10 s and
the scale-down delay 30 s, so every count below follows from the policy's arithmetic.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from aiohttp import web

from slipway.control import ControlPlane
from slipway.control.autoscaler import (
    Autoscaler, HttpLoadSource, InProcessLoadSource, Load, parse_load_report,
)
from tests.control.conftest import package

AUTOSCALER_LOG = "slipway.control.autoscaler"


def autoscaled(name: str = "echo", *, min_replica: int = 1, max_replica: int = 5) -> bytes:
    return package(f"name: {name}\nkind: custom\nautoscaling: {{min_replica: {min_replica}, "
                   f"max_replica: {max_replica}, concurrency_target: 10, target_utilization_percentage: 100, "
                   "autoscaling_window: 10s, scale_down_delay: 30s}\n")


class ScriptedLoad:
    """A load source that reports whatever the test sets, or raises `error`."""

    def __init__(self) -> None:
        self.current: Load = {}
        self.error: Exception | None = None

    def set(self, deployment_id: str, in_flight: float = 0.0, queued: float = 0.0) -> None:
        self.current[deployment_id] = (in_flight, queued)

    async def load(self) -> Load:
        if self.error is not None:
            raise self.error
        return dict(self.current)


@pytest.fixture
def load() -> ScriptedLoad:
    return ScriptedLoad()


@pytest.fixture
def plane(store, backend, reconciler, home, load):
    return ControlPlane(store, backend, home=home, reconciler=reconciler, autoscaler=Autoscaler(load))


async def ready(plane, workspace, yaml: bytes | None = None, *, start: float = 0.0):
    """A deployment promoted to production and active after two ticks (at `start` and `start` + 1)."""
    deployment = plane.deploy(workspace.id, yaml or autoscaled(), promote=True).deployment
    await plane.tick(start)
    await plane.tick(start + 1)
    assert plane.store.deployments.get(deployment.id).status == "active"
    return deployment


def desired(plane, deployment_id: str) -> int:
    return plane.store.deployments.get(deployment_id).desired_replicas


def running(reconciler, deployment_id: str) -> int:
    return sum(1 for r in reconciler.replicas.values() if r.deployment_id == deployment_id)


def scaling_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == AUTOSCALER_LOG and r.getMessage().startswith("autoscaling deployment")]


async def test_steady_load_scales_up_and_the_same_tick_starts_the_replica(plane, workspace, reconciler, load,
                                                                          caplog):
    caplog.set_level(logging.INFO, AUTOSCALER_LOG)
    deployment = await ready(plane, workspace)
    load.set(deployment.id, in_flight=15)  # needs 1.5 replicas: above 1 x (1 + tolerance), below panic (2x)
    await plane.tick(2.0)
    assert desired(plane, deployment.id) == 2
    [seen] = reconciler.desired_seen[-1]
    assert seen.replicas == 2 and running(reconciler, deployment.id) == 2
    [line] = scaling_lines(caplog)
    assert f"deployment {deployment.id} from 1 to 2 replicas" in line and "average load 15.0" in line
    await plane.tick(3.0)
    assert desired(plane, deployment.id) == 2 and len(scaling_lines(caplog)) == 1  # no change, no line


async def test_a_burst_scales_past_the_window_average_at_once(plane, workspace, load, caplog):
    caplog.set_level(logging.INFO, AUTOSCALER_LOG)
    deployment = await ready(plane, workspace, autoscaled(max_replica=8))
    load.set(deployment.id, in_flight=5)
    for now in range(2, 12):
        await plane.tick(float(now))
    assert desired(plane, deployment.id) == 1
    # Window average (9 x 5 + 100) / 10 = 14.5 alone would give 2; the 6 s burst average
    # (5 x 5 + 100) / 6 = 20.8 is 2.1x one replica's 10, so panic sizes for the burst: 3.
    load.set(deployment.id, in_flight=100)
    await plane.tick(12.0)
    assert desired(plane, deployment.id) == 3
    assert "panic" in scaling_lines(caplog)[-1]


async def test_count_falls_only_after_scale_down_delay(plane, workspace, load):
    deployment = await ready(plane, workspace)
    load.set(deployment.id, in_flight=15)
    await plane.tick(2.0)
    assert desired(plane, deployment.id) == 2
    load.set(deployment.id, in_flight=0)
    for now in (3.0, 10.0, 20.0, 32.0):  # low since 3.0; scale_down_delay is 30 s
        await plane.tick(now)
        assert desired(plane, deployment.id) == 2, now
    await plane.tick(33.0)
    assert desired(plane, deployment.id) == 1


async def test_scales_to_zero_when_idle_and_back_at_once_on_queued_demand(plane, workspace, reconciler, load,
                                                                         caplog):
    caplog.set_level(logging.INFO, AUTOSCALER_LOG)
    deployment = await ready(plane, workspace, autoscaled(min_replica=0, max_replica=2))
    assert desired(plane, deployment.id) == 1  # a new deployment starts with one replica
    load.set(deployment.id)
    for now in (2.0, 20.0, 31.0):
        await plane.tick(now)
        assert desired(plane, deployment.id) == 1, now
    await plane.tick(32.0)
    assert desired(plane, deployment.id) == 0 and running(reconciler, deployment.id) == 0
    await plane.tick(35.0)
    assert desired(plane, deployment.id) == 0  # stays asleep without demand

    load.set(deployment.id, queued=3)
    await plane.tick(40.0)
    assert desired(plane, deployment.id) == 1 and running(reconciler, deployment.id) == 1
    assert "cold start" in scaling_lines(caplog)[-1]


async def test_wake_runs_a_tick_at_once_for_a_request_held_at_zero(plane, workspace, reconciler, load):
    deployment = await ready(plane, workspace, autoscaled(min_replica=0, max_replica=2))
    plane.scale(workspace.id, deployment.id, 0)  # asleep until a request arrives
    assert plane.store.deployments.get(deployment.id).spec["autoscaling"]["max_replica"] == 2
    ticks_before = len(reconciler.desired_seen)
    loop = asyncio.create_task(plane.run_forever(interval=60.0))
    try:
        async with asyncio.timeout(5):
            while len(reconciler.desired_seen) == ticks_before:  # the loop's first tick
                await asyncio.sleep(0.01)
            assert desired(plane, deployment.id) == 0
            load.set(deployment.id, queued=1)
            await asyncio.to_thread(plane.wake)  # as a gateway's thread would; the interval is 60 s
            # The same tick writes the count, then reconciles it: wait for both, well within the interval.
            while desired(plane, deployment.id) == 0 or running(reconciler, deployment.id) == 0:
                await asyncio.sleep(0.01)
        assert desired(plane, deployment.id) == 1 and running(reconciler, deployment.id) == 1
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_failed_inactive_deploying_and_retiring_deployments_are_left_alone(plane, workspace, reconciler,
                                                                                 load, caplog):
    caplog.set_level(logging.INFO, AUTOSCALER_LOG)
    old = await ready(plane, workspace)
    broken = plane.deploy(workspace.id, autoscaled("broken"), promote=True).deployment
    reconciler.failing.add(broken.id)
    idle = plane.deploy(workspace.id, autoscaled("idle"), promote=True).deployment
    plane.deactivate(workspace.id, idle.id)
    await plane.tick(2.0)
    new = plane.deploy(workspace.id, autoscaled(), promote=True).deployment  # old serves until new is ready
    for deployment in (old, broken, idle, new):
        load.set(deployment.id, in_flight=100)

    await plane.tick(3.0)
    rows = {d.id: plane.store.deployments.get(d.id) for d in (old, broken, idle, new)}
    assert [(rows[d.id].status, rows[d.id].desired_replicas) for d in (old, broken, idle, new)] == [
        ("active", 1), ("failed", 0), ("inactive", 0), ("deploying", 1)]
    assert scaling_lines(caplog) == []

    await plane.tick(4.0)  # new is ready: it takes over production and old retires
    assert plane.store.deployments.get(old.id).status == "inactive"
    await plane.tick(5.0)
    assert desired(plane, new.id) == 5 and desired(plane, old.id) == 0
    assert [line.split(" from")[0] for line in scaling_lines(caplog)] == [f"autoscaling deployment {new.id}"]


async def test_never_above_max_replica(plane, workspace, load):
    deployment = await ready(plane, workspace, autoscaled(max_replica=3))
    load.set(deployment.id, in_flight=500)
    for now in range(2, 8):
        await plane.tick(float(now))
        assert desired(plane, deployment.id) == 3


async def test_explicit_scale_holds_the_count_until_autoscaling_settings_change(plane, workspace, load):
    deployment = await ready(plane, workspace)
    scaled = plane.scale(workspace.id, deployment.id, 2)
    assert (scaled.spec["autoscaling"]["min_replica"], scaled.spec["autoscaling"]["max_replica"]) == (2, 2)
    load.set(deployment.id, in_flight=100)
    for now in (2.0, 3.0, 4.0):
        await plane.tick(now)
        assert desired(plane, deployment.id) == 2
    assert plane.autoscaler.state_of(deployment.id) is None  # fixed size: not autoscaled

    plane.set_autoscaling(workspace.id, deployment.id, {"min_replica": 1, "max_replica": 5})
    await plane.tick(5.0)
    assert desired(plane, deployment.id) == 5


async def test_settings_changes_take_effect_on_the_next_tick(plane, workspace, load):
    deployment = await ready(plane, workspace)
    load.set(deployment.id, in_flight=15)
    await plane.tick(2.0)
    assert desired(plane, deployment.id) == 2
    plane.set_autoscaling(workspace.id, deployment.id, {"concurrency_target": 5})  # 15 now needs 3
    await plane.tick(3.0)
    assert desired(plane, deployment.id) == 3


async def test_a_deployment_that_stops_running_is_forgotten(plane, workspace, load):
    deployment = await ready(plane, workspace)
    load.set(deployment.id, in_flight=5)
    await plane.tick(2.0)
    assert deployment.id in plane.autoscaler.window and plane.autoscaler.state_of(deployment.id) is not None
    plane.deactivate(workspace.id, deployment.id)
    await plane.tick(3.0)
    assert deployment.id not in plane.autoscaler.window and plane.autoscaler.state_of(deployment.id) is None


async def test_a_failing_load_source_holds_counts_and_is_logged_once(plane, workspace, reconciler, load, caplog):
    caplog.set_level(logging.INFO, AUTOSCALER_LOG)
    deployment = await ready(plane, workspace)
    load.error = ConnectionError("gateway gone")
    for now in (2.0, 3.0, 4.0):
        await plane.tick(now)
    assert desired(plane, deployment.id) == 1 and len(reconciler.desired_seen) == 5  # reconciling went on
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == AUTOSCALER_LOG]
    assert len(errors) == 1 and "reading the load failed" in errors[0].getMessage()

    load.error = None
    load.set(deployment.id, in_flight=15)
    await plane.tick(5.0)
    assert desired(plane, deployment.id) == 2
    assert any("works again" in r.getMessage() for r in caplog.records)


# -- load sources -------------------------------------------------------------------------------

def test_parse_load_report_skips_what_is_not_a_count():
    report = {"snapshot_version": 3, "at": 1.0, "deployments": {
        "dep-a": {"in_flight": 2, "queued": 1}, "dep-b": {"in_flight": "x"}, "dep-c": {"in_flight": -1},
        "dep-d": {"in_flight": float("nan")}, "dep-e": [1, 2], "dep-f": {}}}
    assert parse_load_report(report) == {"dep-a": (2.0, 1.0), "dep-f": (0.0, 0.0)}
    assert parse_load_report(["not", "a", "report"]) == {} and parse_load_report({"deployments": 3}) == {}


async def test_in_process_source_reads_the_real_gateway(plane, workspace, store):
    from slipway.gateway import GatewayConfig, StoreUsageSink, create_gateway_app

    deployment = await ready(plane, workspace)
    gateway = create_gateway_app(plane.snapshots, StoreUsageSink(store), GatewayConfig())
    for _ in range(3):
        gateway.tracker.begin("r-0001", deployment.id)
    assert await InProcessLoadSource(gateway.load).load() == {deployment.id: (3.0, 0.0)}

    async def async_report():
        return {"deployments": {"dep-x": {"in_flight": 1, "queued": 4}}}

    assert await InProcessLoadSource(async_report).load() == {"dep-x": (1.0, 4.0)}


async def _gateway(report: dict, key: str) -> tuple[web.AppRunner, str]:
    """A tiny HTTP server on 127.0.0.1 answering GET /internal/load like a gateway."""

    async def internal_load(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {key}":
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        return web.json_response(report)

    app = web.Application()
    app.router.add_get("/internal/load", internal_load)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_http_source_sums_gateways_and_counts_one_that_is_down_as_nothing(caplog):
    caplog.set_level(logging.INFO, AUTOSCALER_LOG)
    first, first_url = await _gateway({"deployments": {"dep-a": {"in_flight": 2, "queued": 1},
                                                       "dep-b": {"in_flight": 4, "queued": 0}}}, "sk-slw-test")
    second, second_url = await _gateway({"deployments": {"dep-a": {"in_flight": 3, "queued": 2}}}, "sk-slw-test")
    down_url = f"http://127.0.0.1:{_closed_port()}"
    source = HttpLoadSource([first_url, second_url + "/", down_url], "sk-slw-test", timeout=1.0)
    wrong_key = HttpLoadSource([first_url], "sk-slw-wrong", timeout=1.0)
    try:
        for _ in range(2):
            assert await source.load() == {"dep-a": (5.0, 3.0), "dep-b": (4.0, 0.0)}
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and down_url in warnings[0]  # logged once, not every tick
        assert await wrong_key.load() == {}
    finally:
        await source.aclose()
        await wrong_key.aclose()
        await first.cleanup()
        await second.cleanup()


def test_http_source_refuses_an_empty_configuration():
    from slipway.errors import SpecError

    with pytest.raises(SpecError) as raised:
        HttpLoadSource([], "", timeout=0)
    assert "gateway_urls is empty" in raised.value.message and "admin_key is empty" in raised.value.message
