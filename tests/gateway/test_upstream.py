"""The lean upstream client against scripted raw-TCP servers: reuse, stale connections, framing, failures."""

from __future__ import annotations

import asyncio
import socket

import pytest

from slipway.gateway.upstream import (
    PoolLimits, UpstreamBroken, UpstreamConnectFailed, UpstreamPool, UpstreamTimeout,
)

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


class ScriptedServer:
    """Answers each request with `reply(n)` bytes (n counts requests); may close after each answer."""

    def __init__(self, reply, *, close_after_answer: bool = False) -> None:
        self.reply = reply
        self.close_after_answer = close_after_answer
        self.connections = 0
        self.requests = 0

    async def __aenter__(self) -> "ScriptedServer":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length")), 0)
                await reader.readexactly(length)
                self.requests += 1
                reply = self.reply(self.requests)
                for part in (reply if isinstance(reply, list) else [reply]):
                    if isinstance(part, float):
                        await asyncio.sleep(part)
                    elif part is None:
                        writer.close()
                        return
                    else:
                        writer.write(part)
                        await writer.drain()
                if self.close_after_answer:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


def request(body: bytes = b"{}") -> bytes:
    return b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


async def fetch(pool: UpstreamPool, url: str, *, timeout: float = 5.0) -> tuple[int, bytes]:
    response = await pool.send(url, request(), timeout=timeout)
    try:
        return response.status, await response.read_all(5.0)
    finally:
        response.close()


async def test_connections_are_kept_alive_and_reused():
    async with ScriptedServer(lambda n: OK) as server:
        pool = UpstreamPool()
        for _ in range(20):
            assert await fetch(pool, server.url) == (200, b"{}")
        assert (server.connections, server.requests) == (1, 20)
        pool.close()


async def test_a_connection_the_replica_closed_while_idle_is_replaced_transparently():
    async with ScriptedServer(lambda n: OK, close_after_answer=True) as server:
        pool = UpstreamPool()
        for _ in range(5):
            assert await fetch(pool, server.url) == (200, b"{}")
            await asyncio.sleep(0.01)
        assert server.requests == 5
        pool.close()


async def test_chunked_body_arrives_piece_by_piece():
    def reply(n):
        return [b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
                b"5\r\nfirst\r\n", 0.2, b"6\r\nsecond\r\n0\r\n\r\n"]
    async with ScriptedServer(reply) as server:
        pool = UpstreamPool()
        response = await pool.send(server.url, request(), timeout=5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await response.read_chunk(5) == b"first"
        assert loop.time() - started < 0.15  # not held back until the end
        assert await response.read_chunk(5) == b"second"
        assert await response.read_chunk(5) == b""
        response.close()
        assert await fetch(pool, server.url) == (200, b"firstsecond")
        assert server.connections == 1  # the streamed response left its connection reusable
        pool.close()


async def test_a_body_delimited_by_close_is_complete_at_close():
    reply = [b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it", None]
    async with ScriptedServer(lambda n: reply) as server:
        assert await fetch(UpstreamPool(), server.url) == (200, b"all of it")


async def test_refused_connection_is_retryable_failure():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(UpstreamConnectFailed, match="cannot connect"):
        await fetch(UpstreamPool(), url)


async def test_closed_before_any_byte_is_retryable_and_mid_body_is_not():
    async with ScriptedServer(lambda n: [None]) as server:
        with pytest.raises(UpstreamConnectFailed, match="before answering"):
            await fetch(UpstreamPool(), server.url)
    mid_body = [b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial", None]
    async with ScriptedServer(lambda n: mid_body) as server:
        with pytest.raises(UpstreamBroken, match="mid-response"):
            await fetch(UpstreamPool(), server.url)


async def test_timeouts_for_headers_and_for_an_idle_body():
    async with ScriptedServer(lambda n: [1.0, OK]) as server:
        with pytest.raises(UpstreamTimeout, match="no response headers within 0.2s"):
            await fetch(UpstreamPool(), server.url, timeout=0.2)
    slow_body = [b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab", 1.0, b"cd"]
    async with ScriptedServer(lambda n: slow_body) as server:
        response = await UpstreamPool().send(server.url, request(), timeout=5)
        assert await response.read_chunk(5) == b"ab"
        with pytest.raises(UpstreamTimeout, match="no body byte"):
            await response.read_chunk(0.2)
        response.close()


async def test_a_full_pool_makes_requests_wait_for_a_free_connection():
    async with ScriptedServer(lambda n: [0.1, OK]) as server:
        pool = UpstreamPool(PoolLimits(max_connections=2, pool_timeout=5))
        results = await asyncio.gather(*(fetch(pool, server.url) for _ in range(6)))
        assert results == [(200, b"{}")] * 6
        assert server.connections == 2
        tight = UpstreamPool(PoolLimits(max_connections=1, pool_timeout=0.05))
        outcomes = await asyncio.gather(*(fetch(tight, server.url) for _ in range(2)), return_exceptions=True)
        assert sum(isinstance(o, UpstreamTimeout) for o in outcomes) == 1
