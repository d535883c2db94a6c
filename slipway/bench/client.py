"""Sending one streamed request to an OpenAI-compatible server and timing it.

`send_request` never raises for what a server or network does: a non-200 answer, an error
event in the stream, a timeout or a dropped connection all come back as a failed
`RequestRecord`, so one bad request never stops a run. Timestamps are taken as bytes arrive,
before JSON parsing, so parsing cost does not skew TTFT or ITL.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from slipway.bench.config import BenchConfig
from slipway.bench.datasets import BenchRequest
from slipway.bench.record import RequestRecord
from slipway.bench.sse import SseDecoder
from slipway.errors import SlipwayError, UpstreamError

# Error bodies are read only this far: enough for any OpenAI error message.
_MAX_ERROR_BODY_BYTES = 64 * 1024
_MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Target:
    """Where and how requests go: URL, headers and the fields every body carries."""

    url: str
    endpoint: str
    model: str
    headers: dict[str, str]
    ignore_eos: bool = True
    extra_body: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: BenchConfig, model: str) -> Target:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        return cls(url=config.url, endpoint=config.endpoint, model=model, headers=headers,
                   ignore_eos=config.ignore_eos, extra_body=dict(config.extra_body))

    def body(self, request: BenchRequest) -> bytes:
        payload: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.output_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.endpoint == "chat":
            payload["messages"] = request.messages
        else:
            payload["prompt"] = request.prompt
        if self.ignore_eos:
            payload["ignore_eos"] = True
        payload.update(self.extra_body)
        return orjson.dumps(payload)


@dataclass
class _Stream:
    """What has been seen of one response stream so far."""

    sent_at: float
    first_token_at: float | None = None
    last_token_at: float | None = None
    chunks_with_text: int = 0
    itl_ms: list[float] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    error: str | None = None
    done: bool = False

    def on_event(self, data: bytes, arrived_at: float) -> None:
        if data.strip() == b"[DONE]":
            self.done = True
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.error = f"the stream carried an event that is not JSON: {_clip(data.decode(errors='replace'))}"
            return
        if not isinstance(chunk, dict):
            return
        if chunk.get("error"):
            self.error = f"error in stream: {_error_message(chunk)}"
            return
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if _choice_text(choice):
                self._on_token(arrived_at)
                break

    def _on_token(self, arrived_at: float) -> None:
        if self.first_token_at is None:
            self.first_token_at = arrived_at
        else:
            self.itl_ms.append((arrived_at - self.last_token_at) * 1000.0)
        self.last_token_at = arrived_at
        self.chunks_with_text += 1


async def send_request(session: aiohttp.ClientSession, target: Target, request: BenchRequest, *,
                       origin: float, released_at: float) -> RequestRecord:
    """Send `request`, read its stream to the end and time it; `origin` is the run's start
    (time.perf_counter) and `released_at` when arrivals released the request."""
    sent_at = time.perf_counter()
    stream = _Stream(sent_at=sent_at)
    status: int | None = None
    try:
        async with session.post(target.url, data=target.body(request), headers=target.headers) as response:
            status = response.status
            if status != 200:
                body = await response.content.read(_MAX_ERROR_BODY_BYTES)
                stream.error = f"HTTP {status}: {_error_text(body)}"
            else:
                await _read_stream(response, stream)
    except asyncio.TimeoutError:
        stream.error = f"timed out after {time.perf_counter() - sent_at:.1f}s waiting for the server"
    except aiohttp.ClientError as exc:
        stream.error = f"{type(exc).__name__}: {_clip(str(exc)) or 'connection failed'}"
    except SlipwayError as exc:
        stream.error = exc.message
    except Exception as exc:  # noqa: BLE001 - a run outlives whatever one request runs into
        stream.error = f"{type(exc).__name__}: {_clip(str(exc))}"
    ended_at = time.perf_counter()
    return _record(request, stream, status, origin=origin, released_at=released_at, ended_at=ended_at)


async def _read_stream(response: aiohttp.ClientResponse, stream: _Stream) -> None:
    decoder = SseDecoder()
    async for chunk in response.content.iter_any():
        arrived_at = time.perf_counter()
        for data in decoder.feed(chunk):
            stream.on_event(data, arrived_at)
            if stream.error or stream.done:
                return
    for data in decoder.close():
        stream.on_event(data, time.perf_counter())


def _record(request: BenchRequest, stream: _Stream, status: int | None, *, origin: float,
            released_at: float, ended_at: float) -> RequestRecord:
    usage = stream.usage or {}
    completion_tokens = usage.get("completion_tokens")
    output_tokens = completion_tokens if isinstance(completion_tokens, int) else stream.chunks_with_text
    prompt_tokens = usage.get("prompt_tokens")
    error = stream.error
    if error is None and stream.first_token_at is None:
        error = "the stream ended without any text; check the model and max_tokens"
    success = error is None
    ttft_ms = e2el_ms = tpot_ms = None
    if success:
        ttft_ms = (stream.first_token_at - stream.sent_at) * 1000.0
        e2el_ms = (ended_at - stream.sent_at) * 1000.0
        if output_tokens > 1:
            tpot_ms = (e2el_ms - ttft_ms) / (output_tokens - 1)
    return RequestRecord(
        index=request.index,
        success=success,
        error=error,
        status=status,
        released_ms=(released_at - origin) * 1000.0,
        sent_ms=(stream.sent_at - origin) * 1000.0,
        ended_ms=(ended_at - origin) * 1000.0,
        input_tokens=prompt_tokens if isinstance(prompt_tokens, int) else request.input_tokens,
        output_tokens=output_tokens if success else 0,
        expected_output_tokens=request.output_tokens,
        usage_reported=isinstance(completion_tokens, int),
        ttft_ms=ttft_ms,
        e2el_ms=e2el_ms,
        tpot_ms=tpot_ms,
        itl_ms=stream.itl_ms if success else [],
    )


def _choice_text(choice: Any) -> str:
    """The text a streamed choice carries: chat delta content (or reasoning), or completion text."""
    if not isinstance(choice, dict):
        return ""
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning") or ""
    return choice.get("text") or ""


def _error_text(body: bytes) -> str:
    try:
        return _error_message(orjson.loads(body))
    except orjson.JSONDecodeError:
        return _clip(body.decode(errors="replace")) or "(empty body)"


def _error_message(payload: Any) -> str:
    """The message of an OpenAI error body {"error": {"message": ...}}, or the payload itself."""
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, dict) and error.get("message"):
            return _clip(str(error["message"]))
        if isinstance(error, str):
            return _clip(error)
        if isinstance(payload.get("detail"), str):
            return _clip(payload["detail"])
    return _clip(str(payload))


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + "..."


async def first_model(session: aiohttp.ClientSession, config: BenchConfig) -> str:
    """The first model GET /v1/models lists, for runs that name none."""
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    url = config.base_url + "/v1/models"
    try:
        async with session.get(url, headers=headers) as response:
            body = await response.content.read(_MAX_ERROR_BODY_BYTES * 16)
            if response.status != 200:
                raise UpstreamError(f"GET {url} answered HTTP {response.status}: {_error_text(body)}; "
                                    "pass --model NAME or fix the URL or API key")
            models = orjson.loads(body).get("data") or []
    except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError, AttributeError) as exc:
        raise UpstreamError(f"could not list models at {url} ({type(exc).__name__}: {exc}); "
                            "check --base-url, or pass --model NAME") from None
    if not models or not isinstance(models[0], dict) or not models[0].get("id"):
        raise UpstreamError(f"{url} lists no models; deploy one, or pass --model NAME")
    return str(models[0]["id"])
