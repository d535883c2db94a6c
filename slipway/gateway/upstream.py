"""A lean HTTP/1.1 client for replicas: pooled keep-alive connections, bodies streamed as they come.

The proxy hop is the gateway's hot path. A general-purpose client (cookies, redirects, URL
objects, tracing hooks) spends several times more CPU per request than this one, which writes one
pre-built request and parses the answer with httptools (C): 17 µs against 95 µs for aiohttp, as
measured in docs/benchmarks.md. It speaks only what replicas need: one request at a time per
connection, Content-Length or chunked or close-delimited bodies.

    pool = UpstreamPool(limits)
    response = await pool.send("http://127.0.0.1:8001", request_bytes, timeout=120)   # returns at the headers
    chunk = await response.read_chunk(idle_timeout, deadline)              # b"" at the end
    response.close()            # connection back to the pool, or aborted if the body is unfinished

Failures (all `slipway.errors.UpstreamError`):
    UpstreamConnectFailed   no byte came back: refused, reset or closed first. Safe to retry elsewhere.
    UpstreamTimeout         no headers within the timeout, no body byte within the idle timeout, or
                            the body unfinished at the deadline (loop.time() based).
    UpstreamBroken          the connection failed after the first byte. Not retryable.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from slipway.errors import UpstreamError

# Flow control of one response body: stop reading the socket past HIGH buffered bytes, resume under LOW.
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


class UpstreamConnectFailed(UpstreamError):
    """The replica sent nothing back: the request can be retried on another replica."""

    status_code = 502
    code = "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    code = "upstream_timeout"


class UpstreamBroken(UpstreamError):
    code = "upstream_broken"


@dataclass(frozen=True)
class PoolLimits:
    connect_timeout: float = 5.0
    pool_timeout: float = 30.0
    max_connections: int = 512
    max_idle_connections: int = 64


class UpstreamResponse:
    """Status, headers, and a body read chunk by chunk. Always `close()` it."""

    __slots__ = ("status", "headers", "keep_alive", "complete", "received", "framed", "_conn", "_loop",
                 "_chunks", "_buffered", "_paused", "_error", "_waiter", "_headers_future")

    def __init__(self, conn: "_Connection", loop: asyncio.AbstractEventLoop) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self.complete = False
        self.received = False
        self.framed = False
        self._conn: _Connection | None = conn
        self._loop = loop
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._headers_future: asyncio.Future[None] = loop.create_future()

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    # -- reading -------------------------------------------------------------------------------

    async def wait_headers(self, timeout: float) -> None:
        future = self._headers_future
        if not future.done():
            timer = self._loop.call_later(timeout, _expire, future,
                                          UpstreamTimeout(f"the replica sent no response headers within {timeout:g}s"))
            try:
                await future
            finally:
                timer.cancel()
        else:
            future.result()

    async def read_chunk(self, idle_timeout: float, deadline: float | None = None) -> bytes:
        """The next piece of the body as it arrived; b"" once the body is complete."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered < _LOW_WATER and self._conn is not None:
                    self._paused = False
                    self._conn.transport.resume_reading()
                return chunk
            if self.complete:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait_for_bytes(idle_timeout, deadline)

    async def _wait_for_bytes(self, idle_timeout: float, deadline: float | None) -> None:
        """Until the connection delivers more body (or ends, or fails); UpstreamTimeout after `idle_timeout`,
        or at `deadline`, whichever comes first."""
        timeout = idle_timeout
        if deadline is not None and deadline - self._loop.time() < idle_timeout:
            timeout = max(0.0, deadline - self._loop.time())
            error = UpstreamTimeout("the replica's answer did not finish within the request's time limit")
        else:
            error = UpstreamTimeout(f"the replica sent no body byte for {idle_timeout:g}s")
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(timeout, _expire, waiter, error)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def read_all(self, idle_timeout: float, deadline: float | None = None) -> bytes:
        """The whole body (callers bound its size by Content-Length first)."""
        while not self.complete:
            if self._error is not None:
                raise self._error
            await self._wait_for_bytes(idle_timeout, deadline)
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return body

    def abort(self, reason: str) -> None:
        """Stop now: drop the connection and make a pending or later read raise `UpstreamBroken`."""
        if self.complete:
            return  # finished anyway: close() gives the connection back
        if self._error is None:
            self._error = UpstreamBroken(reason)
        self._chunks.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.response = None
            conn.abort()
        self._wake()

    def close(self) -> None:
        """Give the connection back when the body was read to its end; abort it otherwise."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.response = None
        if self.complete and self.keep_alive and not conn.lost and not self._chunks:
            conn.origin.release(conn)
        else:
            conn.abort()

    # -- fed by the connection -----------------------------------------------------------------

    def _on_headers(self, status: int, keep_alive: bool) -> None:
        self.status = status
        self.keep_alive = keep_alive
        for key, value in self.headers:
            if key == b"content-length" or (key == b"transfer-encoding" and b"chunked" in value.lower()):
                self.framed = True
        if not self._headers_future.done():
            self._headers_future.set_result(None)

    def _on_body(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > _HIGH_WATER and not self._paused and self._conn is not None:
            self._paused = True
            self._conn.transport.pause_reading()
        self._wake()

    def _on_complete(self) -> None:
        self.complete = True
        self._wake()

    def _on_lost(self, exc: BaseException | None) -> None:
        if not self._headers_future.done():
            error: UpstreamError = (UpstreamBroken if self.received else UpstreamConnectFailed)(
                f"the replica closed the connection before answering ({exc or 'connection closed'})")
            self._headers_future.set_exception(error)
            self._headers_future.exception()  # retrieved here, so an unawaited one logs nothing
        elif not self.complete:
            if not self.framed:  # a body delimited by the end of the connection ends here
                self.complete = True
            else:
                self._error = UpstreamBroken(f"the replica closed the connection mid-response ({exc or 'closed'})")
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _expire(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class _Connection(asyncio.Protocol):
    """One keep-alive TCP connection to a replica; serves one response at a time."""

    def __init__(self, origin: "_Origin") -> None:
        self.origin = origin
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.lost = False
        self.counted = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes nobody asked for: this connection cannot be trusted again
            self.abort()
            return
        response.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response._on_lost(UpstreamBroken(f"the replica sent malformed HTTP: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.origin.forget(self)
        if self.response is not None:
            self.response._on_lost(exc)

    def abort(self) -> None:
        self.lost = True
        self.origin.forget(self)
        if self.transport is not None:
            self.transport.abort()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.response.headers.append((name.lower(), value))  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        self.response._on_headers(self.parser.get_status_code(), self.parser.should_keep_alive())  # type: ignore[union-attr]

    def on_body(self, body: bytes) -> None:
        self.response._on_body(body)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        self.response._on_complete()  # type: ignore[union-attr]


class _Origin:
    """The connections to one replica base URL: idle ones to reuse, a cap on open ones."""

    def __init__(self, url: str, limits: PoolLimits, loop: asyncio.AbstractEventLoop) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamConnectFailed(f"replica URL {url!r} is not http(s)://host:port; fix the replica's URL")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl_module.create_default_context() if parts.scheme == "https" else None
        self.host_header = parts.netloc.encode()
        self.path_prefix = parts.path.rstrip("/").encode()
        self.limits = limits
        self.loop = loop
        self.idle: deque[_Connection] = deque()
        self.open_count = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.retired = False

    async def acquire(self) -> tuple[_Connection, bool]:
        """A connection and whether it was reused; `UpstreamConnectFailed` when none can be had."""
        while True:
            while self.idle:
                conn = self.idle.pop()
                if not conn.lost and not conn.transport.is_closing():
                    return conn, True
            if self.open_count < self.limits.max_connections:
                break
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, self.limits.pool_timeout)
            except asyncio.TimeoutError:
                raise UpstreamTimeout(f"all {self.limits.max_connections} connections to {self.url} stayed busy "
                                      f"for {self.limits.pool_timeout:g}s; add replicas or raise "
                                      "max_connections_per_replica") from None
            finally:
                if waiter in self.waiters:
                    self.waiters.remove(waiter)
        self.open_count += 1
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: _Connection(self), self.host, self.port, ssl=self.ssl),
                self.limits.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            self.open_count -= 1
            self._wake_one()
            reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else str(exc) or type(exc).__name__
            raise UpstreamConnectFailed(f"cannot connect to replica {self.url}: {reason}") from None
        return conn, False

    def release(self, conn: _Connection) -> None:
        if self.retired or len(self.idle) >= self.limits.max_idle_connections:
            conn.abort()
        else:
            self.idle.append(conn)
        self._wake_one()

    def forget(self, conn: _Connection) -> None:
        if conn.counted:
            conn.counted = False
            self.open_count -= 1
            try:
                self.idle.remove(conn)
            except ValueError:
                pass
            self._wake_one()

    def retire(self) -> None:
        """Close idle connections now and busy ones when their response ends."""
        self.retired = True
        while self.idle:
            self.idle.pop().abort()

    def _wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class UpstreamPool:
    """Connection pools by replica base URL. Use from one event loop."""

    def __init__(self, limits: PoolLimits | None = None) -> None:
        self.limits = limits or PoolLimits()
        self._origins: dict[str, _Origin] = {}

    def request_target(self, url: str, path: bytes) -> tuple[bytes, bytes]:
        """(Host header value, request target) for `path` on the replica at `url`."""
        origin = self._origin(url)
        return origin.host_header, origin.path_prefix + path

    async def send(self, url: str, request: bytes, *, timeout: float) -> UpstreamResponse:
        """Write `request` (complete HTTP/1.1 bytes) to the replica at `url`; return at its headers.

        `timeout` bounds the time to the first byte: connecting (itself bounded by connect_timeout)
        and waiting for the response headers together.
        """
        origin = self._origin(url)
        loop = origin.loop
        deadline = loop.time() + timeout
        for attempt in (0, 1):
            conn, reused = await origin.acquire()
            response = UpstreamResponse(conn, loop)
            conn.response = response
            conn.transport.write(request)
            try:
                await response.wait_headers(max(0.0, deadline - loop.time()))
            except UpstreamTimeout:
                response.close()
                raise UpstreamTimeout(f"the replica sent no response headers within {timeout:g}s") from None
            except UpstreamConnectFailed:
                response.close()
                # A kept-alive connection the replica closed while idle: try once on a fresh one.
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                response.close()
                raise
            return response
        raise AssertionError("unreachable")

    def retain(self, urls: set[str]) -> None:
        """Forget pools of replicas not in `urls` (they left the routing snapshot)."""
        for url in [u for u in self._origins if u not in urls]:
            self._origins.pop(url).retire()

    def close(self) -> None:
        for origin in self._origins.values():
            origin.retire()
        self._origins.clear()

    def _origin(self, url: str) -> _Origin:
        origin = self._origins.get(url)
        if origin is None:
            origin = self._origins[url] = _Origin(url, self.limits, asyncio.get_running_loop())
        return origin
