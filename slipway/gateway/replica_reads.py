"""Reading a replica's JSON routes (GET /stats, GET /tokenizer) over the gateway's lean upstream client.

    payload = await get_json(pool, "http://127.0.0.1:8001", b"/stats", timeout=0.5, max_bytes=8 << 20)

One GET, bounded in time (connecting, headers and body together) and in size. Every failure
raises `ReplicaReadError` saying what went wrong; the callers are background loops that log it
and carry on, so a slow or broken replica never stops them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from slipway.errors import UpstreamError
from slipway.gateway.upstream import UpstreamPool


# Per-step timeouts under the one overall timeout of `get_json`.
_NO_LIMIT = 3600.0


class ReplicaReadError(UpstreamError):
    """A replica's JSON route could not be read: unreachable, too slow, too large, not 200, not JSON."""

    code = "replica_read_failed"


async def get_json(pool: UpstreamPool, url: str, path: bytes, *, timeout: float, max_bytes: int) -> Any:
    """The parsed JSON body of `GET path` on the replica at `url`, within `timeout` seconds and `max_bytes`."""
    where = f"GET {path.decode()} from {url}"
    try:
        async with asyncio.timeout(timeout):  # waiting for a pooled connection included
            status, body = await _get(pool, url, path, where, max_bytes)
    except TimeoutError:
        raise ReplicaReadError(f"{where} took longer than {timeout:g}s") from None
    except ReplicaReadError:
        raise
    except UpstreamError as exc:
        raise ReplicaReadError(f"{where} failed: {exc.message}") from None
    if status != 200:
        raise ReplicaReadError(f"{where} answered {status}: {body[:300].decode(errors='replace')}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ReplicaReadError(f"{where}: the answer is not JSON") from None


async def _get(pool: UpstreamPool, url: str, path: bytes, where: str, max_bytes: int) -> tuple[int, bytes]:
    host, target = pool.request_target(url, path)
    request = b"GET " + target + b" HTTP/1.1\r\nhost: " + host + b"\r\naccept: application/json\r\n\r\n"
    # The outer timeout bounds everything; these per-read limits only have to be generous.
    response = await pool.send(url, request, timeout=_NO_LIMIT)
    try:
        length = response.header(b"content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            raise ReplicaReadError(f"{where}: the answer has {int(length)} bytes, more than the {max_bytes} allowed")
        chunks: list[bytes] = []
        size = 0
        while chunk := await response.read_chunk(_NO_LIMIT):
            size += len(chunk)
            if size > max_bytes:
                raise ReplicaReadError(f"{where}: the answer exceeds the {max_bytes} bytes allowed")
            chunks.append(chunk)
    finally:
        response.close()
    return response.status, b"".join(chunks)
