"""ReplicaStatsPoller: the KV blocks kv_aware deployments' replicas report, read from real /stats servers,
kept bounded and forgotten when stale or gone; and ReplicaTracker handing them to the policy."""

from __future__ import annotations

import asyncio
import threading

import orjson
import pytest

from slipway.gateway import GatewayConfig
from slipway.gateway.health import ReplicaTracker
from slipway.gateway.replica_reads import ReplicaReadError, get_json
from slipway.gateway.replica_stats import MAX_HASHES_PER_REPLICA, ReplicaStatsPoller
from slipway.gateway.table import RouteTable
from slipway.gateway.upstream import UpstreamPool
from slipway.routing import KvAware, KvAwareConfig, RouteRequest
from slipway.spec.snapshot import DeploymentEntry, ReplicaEntry, RoutingSnapshot
from tests.gateway.conftest import ServerThread

INTERVAL = 0.05


class StatsReplica:
    """Serves GET /stats with `payload` (after `delay` seconds), counting reads."""

    def __init__(self, payload: object) -> None:
        self.payload = payload
        self.delay = 0.0
        self.reads = 0
        self.lock = threading.Lock()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        with self.lock:
            self.reads += 1
        await asyncio.sleep(self.delay)
        status, body = (200, orjson.dumps(self.payload)) if scope["path"] == "/stats" else (404, b"{}")
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def stats_replicas():
    """start(*payloads) -> [(StatsReplica, url)], each on its own port."""
    servers: list[ServerThread] = []

    def start(*payloads):
        started = []
        for payload in payloads:
            app = StatsReplica(payload)
            server = ServerThread(app).start()
            servers.append(server)
            started.append((app, server.url))
        return started

    yield start
    for server in servers:
        server.stop()


def table(*deployments: tuple[str, str, list[tuple[str, bool]]]) -> RouteTable:
    """RouteTable of deployments given as (id, routing, [(url, ready)])."""
    entries = []
    for deployment_id, routing, replicas in deployments:
        entries.append(DeploymentEntry(
            deployment_id=deployment_id, model_name=deployment_id, number=1, kind="llm", status="active",
            routing=routing, replicas=[ReplicaEntry(replica_id=f"{deployment_id}-r{i}", url=url, ready=ready)
                                       for i, (url, ready) in enumerate(replicas)]))
    return RouteTable.build(RoutingSnapshot(version=1, deployments=entries))


def poller(**config) -> ReplicaStatsPoller:
    config.setdefault("replica_stats_interval", INTERVAL)
    config.setdefault("replica_stats_timeout", 1.0)
    return ReplicaStatsPoller(UpstreamPool(), GatewayConfig(**config))


async def test_only_ready_replicas_of_kv_aware_deployments_are_read(stats_replicas):
    (kv, kv_url), (idle, idle_url), (other, other_url) = stats_replicas(
        {"cached_block_hashes": [3, 2, 1]}, {"cached_block_hashes": [9]}, {"cached_block_hashes": [7]})
    routes = table(("d-kv", "kv_aware", [(kv_url, True), (idle_url, False)]),
                   ("d-ll", "least_load", [(other_url, True)])).deployments.values()
    stats = poller()
    await stats.poll_once(routes)
    assert stats.cached_blocks == {"d-kv-r0": frozenset({1, 2, 3})}
    assert (kv.reads, idle.reads, other.reads) == (1, 0, 0)
    stats.pool.close()


async def test_reports_are_bounded_and_keep_only_integers(stats_replicas):
    hashes = list(range(MAX_HASHES_PER_REPLICA + 10))
    ((_, url),) = stats_replicas({"cached_block_hashes": ["x", 1.5, True, *hashes]})
    stats = poller()
    await stats.poll_once(table(("d", "kv_aware", [(url, True)])).deployments.values())
    assert stats.cached_blocks["d-r0"] == frozenset(hashes[:MAX_HASHES_PER_REPLICA - 3])
    stats.pool.close()


async def test_a_replica_without_a_summary_is_unknown_not_empty(stats_replicas):
    ((_, url),) = stats_replicas({"running": 0})
    stats = poller()
    await stats.poll_once(table(("d", "kv_aware", [(url, True)])).deployments.values())
    assert "d-r0" not in stats.cached_blocks
    stats.pool.close()


async def test_a_slow_replica_keeps_its_last_report_until_it_is_stale(stats_replicas):
    ((app, url),) = stats_replicas({"cached_block_hashes": [5]})
    routes = table(("d", "kv_aware", [(url, True)])).deployments.values()
    stats = poller(replica_stats_timeout=0.1)
    await stats.poll_once(routes)
    app.delay = 0.3  # every read now misses its timeout
    await stats.poll_once(routes)
    assert stats.cached_blocks["d-r0"] == frozenset({5}), "one missed read must not drop the report"
    await asyncio.sleep(3 * INTERVAL)
    await stats.poll_once(routes)
    assert "d-r0" not in stats.cached_blocks
    stats.pool.close()


async def test_replicas_that_leave_or_stop_being_ready_are_forgotten(stats_replicas):
    (_, first), (_, second) = stats_replicas({"cached_block_hashes": [1]}, {"cached_block_hashes": [2]})
    stats = poller()
    await stats.poll_once(table(("d", "kv_aware", [(first, True), (second, True)])).deployments.values())
    assert set(stats.cached_blocks) == {"d-r0", "d-r1"}
    await stats.poll_once(table(("d", "kv_aware", [(first, True), (second, False)])).deployments.values())
    assert set(stats.cached_blocks) == {"d-r0"}
    await stats.poll_once(table(("d", "least_load", [(first, True)])).deployments.values())
    assert stats.cached_blocks == {}
    stats.pool.close()


async def test_the_background_task_polls_every_interval_and_stops(stats_replicas):
    ((app, url),) = stats_replicas({"cached_block_hashes": [1]})
    routes = table(("d", "kv_aware", [(url, True)])).deployments.values()
    stats = poller()
    stats.start(lambda: routes)
    await asyncio.sleep(12 * INTERVAL)
    await stats.stop()
    reads = app.reads
    assert 3 <= reads <= 14 and stats.cached_blocks["d-r0"] == frozenset({1})
    await asyncio.sleep(3 * INTERVAL)
    assert app.reads == reads, "stopped means no more reads"
    stats.pool.close()


async def test_get_json_says_what_went_wrong(stats_replicas):
    ((app, url),) = stats_replicas({"cached_block_hashes": [1]})
    pool = UpstreamPool()
    with pytest.raises(ReplicaReadError, match=r"GET /nothing from .* answered 404"):
        await get_json(pool, url, b"/nothing", timeout=1, max_bytes=1000)
    with pytest.raises(ReplicaReadError, match="more than the 5 allowed"):
        await get_json(pool, url, b"/stats", timeout=1, max_bytes=5)
    app.delay = 0.5
    with pytest.raises(ReplicaReadError, match="took longer than 0.1s"):
        await get_json(pool, url, b"/stats", timeout=0.1, max_bytes=1000)
    with pytest.raises(ReplicaReadError, match="failed"):
        await get_json(pool, "http://127.0.0.1:9", b"/stats", timeout=1, max_bytes=1000)
    pool.close()


def test_the_tracker_hands_reported_blocks_to_the_policy():
    route = table(("d", "kv_aware", [("http://127.0.0.1:1", True), ("http://127.0.0.1:2", True)])).deployments["d"]
    route.policy = KvAware(KvAwareConfig(learn_routed=False))
    reported = {"d-r1": frozenset({11, 12})}
    tracker = ReplicaTracker(cooldown=5.0, cached_blocks=reported)
    request = RouteRequest("d", block_hashes=(11, 12, 13))
    assert {tracker.choose(route, request, frozenset(), now=0.0).replica_id for _ in range(4)} == {"d-r1"}
    reported.clear()  # the poller forgot it: both are unknown again, and ties rotate
    assert {tracker.choose(route, request, frozenset(), now=0.0).replica_id for _ in range(4)} == {"d-r0", "d-r1"}
