"""Snapshot sources: the static one across threads, and the HTTP long poll against a real server."""

from __future__ import annotations

import asyncio
import threading
import time
from urllib.parse import parse_qs


from slipway.gateway import HttpSnapshotSource, StaticSnapshotSource
from slipway.spec.snapshot import RoutingSnapshot
from tests.gateway.conftest import ServerThread

ADMIN = "sk-slw-" + "c" * 40


class FakeControlPlane:
    """GET /internal/snapshot?after=N&timeout=S over a StaticSnapshotSource, admin key required."""

    def __init__(self) -> None:
        self.snapshots = StaticSnapshotSource(RoutingSnapshot(version=1))
        self.polls = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        self.polls += 1
        if dict(scope["headers"]).get(b"authorization") != f"Bearer {ADMIN}".encode():
            await _send(send, 401, b'{"error": {"message": "bad key"}}')
            return
        query = parse_qs(scope["query_string"].decode())
        snapshot = await self.snapshots.wait_newer(int(query["after"][0]), float(query["timeout"][0]))
        await _send(send, 200, snapshot.model_dump_json().encode())


async def _send(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


async def test_static_source_wakes_a_waiter_published_from_another_thread():
    source = StaticSnapshotSource(RoutingSnapshot(version=1))
    assert (await source.wait_newer(0, 5)).version == 1  # newer exists: at once
    started = time.monotonic()
    assert (await source.wait_newer(1, 0.05)).version == 1  # nothing newer: the current one after the timeout
    assert time.monotonic() - started >= 0.05
    threading.Timer(0.05, source.publish, [RoutingSnapshot(version=2)]).start()
    assert (await source.wait_newer(1, 5)).version == 2


async def test_http_source_long_polls_and_keeps_the_last_good_snapshot():
    control = FakeControlPlane()
    server = ServerThread(control).start()
    source = HttpSnapshotSource(server.url, ADMIN, retry_delay=0.05)
    try:
        assert source.current().version == -1
        assert (await source.wait_newer(-1, 1)).version == 1
        # The long poll returns as soon as a newer snapshot is published.
        waiting = asyncio.ensure_future(source.wait_newer(1, 10))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        control.snapshots.publish(RoutingSnapshot(version=5))
        assert (await asyncio.wait_for(waiting, 5)).version == 5
    finally:
        server.stop()
    # The control plane is gone: the last good snapshot stays.
    assert (await source.wait_newer(5, 0.2)).version == 5
    assert source.current().version == 5
    await source.close()


async def test_http_source_with_a_wrong_key_serves_what_it_has():
    control = FakeControlPlane()
    server = ServerThread(control).start()
    source = HttpSnapshotSource(server.url, "sk-slw-wrong", retry_delay=0.01)
    try:
        assert (await source.wait_newer(-1, 0.5)).version == -1
        assert control.polls == 1
    finally:
        await source.close()
        server.stop()
