"""The `vllm` engine of `kind: llm` packages: vLLM's OpenAI server as a child process, proxied.

    load()  weights ─► HF folder (a .gguf is converted once, see gguf_convert.py)
              ─► check the interpreter has vllm ─► spawn api_server on a free 127.0.0.1 port
              ─► wait for its /health (bounded; fails fast if it exits) ─► start the stats poll
    chat_completions / completions   the body goes to the child as it is (its `model` set to the
              served name); a stream is relayed event by event, never buffered whole; the child's
              status codes and OpenAI errors come back unchanged in meaning
    stats() the last poll of the child's Prometheus /metrics, mapped to the builtin engine's keys
    close() SIGTERM to the child's process group, SIGKILL after a grace period

Nothing in this module imports vLLM: it runs in its own interpreter (see vllm_process.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import time
from collections import deque
from pathlib import Path
from typing import Any, Mapping

import aiohttp
import orjson
from pydantic import BaseModel, Field

from slipway.errors import RuntimeLoadError, UpstreamError
from slipway.runtimes import vllm_process
from slipway.runtimes.base import PredictResult
from slipway.runtimes.llm import LlmRuntime
from slipway.runtimes.gguf_convert import hf_folder_for, slipway_home
from slipway.runtimes.vllm_metrics import map_vllm_metrics
from slipway.runtimes.weights import resolve_weights
from slipway.spec.package import PackageSpec

log = logging.getLogger(__name__)

_SSE_DONE = b"data: [DONE]"


class VllmConfig(BaseModel):
    """How the replica runs and talks to its vLLM child; each field reads SLIPWAY_VLLM_<FIELD> too,
    so a package can set them under `runtime.env` in slipway.yaml."""

    start_timeout: float = Field(900.0, gt=0, description="Seconds vLLM may take to answer /health (60+ on CPU).")
    health_poll_interval: float = Field(0.5, gt=0, description="Seconds between /health checks while starting.")
    stats_interval: float = Field(1.0, gt=0, description="Seconds between polls of the child's /metrics.")
    stats_timeout: float = Field(2.0, gt=0, description="Seconds one /metrics poll may take before it is skipped.")
    stop_timeout: float = Field(15.0, ge=0, description="Seconds after SIGTERM before the child's group is killed.")
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to open a connection to the child.")
    read_timeout: float = Field(600.0, gt=0, description="Longest silence from the child during one request.")
    max_connections: int = Field(1024, ge=1, description="Connections to the child open at once.")
    max_event_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Largest single SSE event relayed.")
    check_timeout: float = Field(60.0, gt=0, description="Seconds for the 'is vllm installed' check.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "VllmConfig":
        environ = os.environ if environ is None else environ
        values = {name: environ[f"SLIPWAY_VLLM_{name.upper()}"] for name in cls.model_fields
                  if f"SLIPWAY_VLLM_{name.upper()}" in environ}
        return cls.model_validate(values)


class VllmUpstreamError(UpstreamError):
    """vLLM answered with an error: its status code and message, in the OpenAI error shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message, code=_CODE_BY_STATUS.get(status, "upstream_error"))
        self.status_code = status
        self.error_type = _TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.param = param


_TYPE_BY_STATUS = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
_CODE_BY_STATUS = {400: "invalid_request", 404: "not_found", 413: "body_too_large", 422: "invalid_request",
                   429: "rate_limited", 503: "overloaded"}


class VllmRuntime(LlmRuntime):
    """A kind `llm` package served by a vLLM child process (see the module docstring)."""


    def __init__(self, spec: PackageSpec, package_dir: Path, *, config: VllmConfig | None = None,
                 replica_id: str | None = None) -> None:
        self.spec = spec
        self.package_dir = Path(package_dir)
        self.config = config or VllmConfig.from_env()
        self.replica_id = replica_id or os.environ.get("SLIPWAY_REPLICA_ID") or f"r-{os.getpid()}"
        self.base_url: str | None = None
        self.engine: vllm_process.EngineProcess | None = None
        self._session: aiohttp.ClientSession | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._stats: dict[str, Any] = map_vllm_metrics("")
        self._stats_at: float | None = None
        self._replica_dir = vllm_process.replica_folder(slipway_home(), self.replica_id)
        self._tmp_dir: Path | None = None
        """The child's TMPDIR (`vllm_process.tmp_folder`), set by `load`; removed by `close`."""

    # -- lifecycle -------------------------------------------------------------------------

    async def load(self) -> None:
        python = vllm_process.find_vllm_python(self.spec.runtime.python, os.environ, self.package_dir)
        await self._check_has_vllm(python)
        model_dir = await asyncio.to_thread(self._model_folder)
        adapters = {name: resolve_weights(path, self.package_dir) for name, path in self.spec.adapters.items()}
        (self._replica_dir / "cache").mkdir(parents=True, exist_ok=True)
        self._tmp_dir = vllm_process.tmp_folder(self._replica_dir)
        self._tmp_dir.mkdir(parents=True, exist_ok=True)
        port = vllm_process.free_port()
        argv = vllm_process.vllm_command(python, model_dir, port, self.spec, adapters)
        env = vllm_process.vllm_environment(os.environ, self._replica_dir, vllm_process.available_cpus())
        log.info("starting vllm", extra={"argv": " ".join(argv), "port": port})
        # Spawned from the event loop's thread: the child's parent-death signal is tied to it.
        self.engine = vllm_process.spawn(argv, env, cwd=self._replica_dir)
        self.base_url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.config.max_connections),
            timeout=aiohttp.ClientTimeout(total=None, connect=self.config.connect_timeout,
                                          sock_read=self.config.read_timeout),
        )
        try:
            await self._wait_healthy()
        except BaseException:
            await self.close()
            raise
        self._poll_task = asyncio.get_running_loop().create_task(self._poll_stats(), name="vllm-stats")

    async def close(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            self._poll_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.engine is not None:
            await self._stop_engine(self.engine)
            self.engine = None
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)

    def _model_folder(self) -> Path:
        assert self.spec.weights is not None  # the spec requires weights for kind llm
        weights = resolve_weights(self.spec.weights, self.package_dir)
        # Convert in the precision vLLM serves, so the folder loads without a cast of every layer.
        save_dtype = "bfloat16" if vllm_process.vllm_dtype(self.spec.runtime.dtype) == "bfloat16" else "float32"
        return hf_folder_for(weights, dtype=save_dtype)

    async def _check_has_vllm(self, python: Path) -> None:
        argv = vllm_process.check_has_vllm_command(python)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError as exc:
            raise vllm_process.missing_vllm_error(python, f"it did not start: {exc}") from exc
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), self.config.check_timeout)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            detail = f"the check took over {self.config.check_timeout:.0f}s"
            raise vllm_process.missing_vllm_error(python, detail) from None
        if process.returncode == 3:
            raise vllm_process.missing_vllm_error(python, "no module named vllm")
        if process.returncode != 0:
            raise vllm_process.missing_vllm_error(python, stderr.decode(errors="replace").strip()[-500:])

    async def _wait_healthy(self) -> None:
        assert self.engine is not None and self._session is not None
        started = time.monotonic()
        deadline = started + self.config.start_timeout
        probe_timeout = aiohttp.ClientTimeout(total=max(self.config.health_poll_interval, 2.0))
        while True:
            code = self.engine.returncode
            if code is not None:
                raise RuntimeLoadError(
                    f"vLLM exited with code {code} before it was ready; its output is in this replica's log "
                    "just above (common causes: out of memory, an unsupported architecture, a wrong dtype)"
                )
            try:
                async with self._session.get(f"{self.base_url}/health", timeout=probe_timeout) as response:
                    if response.status == 200:
                        log.info("vllm ready", extra={"seconds": round(time.monotonic() - started, 1)})
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass  # not listening yet
            if time.monotonic() >= deadline:
                raise RuntimeLoadError(
                    f"vLLM did not answer /health within {self.config.start_timeout:.0f}s; it is killed. Its "
                    "output is in this replica's log; raise SLIPWAY_VLLM_START_TIMEOUT (runtime.env in "
                    "slipway.yaml) if it was still loading"
                )
            await asyncio.sleep(self.config.health_poll_interval)

    async def _stop_engine(self, engine: vllm_process.EngineProcess) -> None:
        if engine.returncode is None:
            engine.signal_group(signal.SIGTERM)
            deadline = time.monotonic() + self.config.stop_timeout
            while engine.returncode is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        # Its engine-core and worker processes may outlive the server by a moment: clear the group.
        await asyncio.to_thread(engine.kill)
        engine.forget()

    # -- requests --------------------------------------------------------------------------

    async def chat_completions(self, body: dict[str, Any]) -> PredictResult:
        return await self._proxy("/v1/chat/completions", body)

    async def completions(self, body: dict[str, Any]) -> PredictResult:
        return await self._proxy("/v1/completions", body)

    async def _proxy(self, path: str, body: dict[str, Any]) -> PredictResult:
        session = self._require_session()
        # The gateway already chose this model; vLLM only knows its served name (and adapters).
        if body.get("model") not in self.spec.adapters:
            body = {**body, "model": self.spec.name}
        try:
            response = await session.post(f"{self.base_url}{path}", data=orjson.dumps(body),
                                          headers={"content-type": "application/json"})
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise self._unreachable(exc) from exc
        if response.status != 200:
            async with response:
                raise _error_from(response.status, await response.read())
        if body.get("stream"):
            return SseRelay(response, self.config.max_event_bytes)
        async with response:
            try:
                return orjson.loads(await response.read())
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise self._unreachable(exc) from exc
            except orjson.JSONDecodeError as exc:
                raise UpstreamError(f"vLLM answered {path} with a body that is not JSON: {exc}") from exc

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise UpstreamError("the vLLM engine is not running (not loaded yet, or closed)")
        return self._session

    def _unreachable(self, exc: BaseException) -> UpstreamError:
        code = self.engine.returncode if self.engine is not None else None
        if code is not None:
            return UpstreamError(f"the vLLM engine exited with code {code}; see this replica's log, and restart it")
        return UpstreamError(f"the vLLM engine did not answer ({type(exc).__name__}: {exc}); retry")

    # -- stats -----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        age = None if self._stats_at is None else round(time.monotonic() - self._stats_at, 3)
        alive = self.engine is not None and self.engine.returncode is None
        return {**self._stats, "engine": "vllm", "engine_alive": alive, "engine_stats_age_seconds": age}

    async def _poll_stats(self) -> None:
        """Refresh the stats snapshot every `stats_interval`; a slow or failed poll is skipped."""
        timeout = aiohttp.ClientTimeout(total=self.config.stats_timeout)
        warned = False
        while self._session is not None:
            try:
                async with self._session.get(f"{self.base_url}/metrics", timeout=timeout) as response:
                    text = await response.text()
                self._stats = map_vllm_metrics(text)
                self._stats_at = time.monotonic()
                warned = False
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                if not warned:
                    log.warning("could not read vLLM's /metrics; /stats keeps the last values",
                                extra={"error": f"{type(exc).__name__}: {exc}"})
                    warned = True
            await asyncio.sleep(self.config.stats_interval)


class SseRelay:
    """vLLM's SSE body as an async iterator of whole events (bytes), minus its `[DONE]`.

    The replica server frames the end of every stream itself, so vLLM's own terminator is dropped;
    everything else (chunks, in-band errors) is relayed as soon as its event is complete.
    """

    def __init__(self, response: aiohttp.ClientResponse, max_event_bytes: int) -> None:
        self._response = response
        self._max_event_bytes = max_event_bytes
        self._pending = bytearray()
        self._events: deque[bytes] = deque()

    def __aiter__(self) -> "SseRelay":
        return self

    async def __anext__(self) -> bytes:
        while not self._events:
            try:
                data = await self._response.content.readany()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                await self.aclose()
                raise UpstreamError(f"the vLLM stream broke off ({type(exc).__name__}: {exc})") from exc
            if not data:
                await self.aclose()
                raise StopAsyncIteration
            try:
                self._split(data)
            except UpstreamError:
                await self.aclose()
                raise
        return self._events.popleft()

    def _split(self, data: bytes) -> None:
        self._pending += data.replace(b"\r\n", b"\n")
        while (end := self._pending.find(b"\n\n")) >= 0:
            event = bytes(self._pending[: end + 2])
            del self._pending[: end + 2]
            if event.strip() != _SSE_DONE:
                self._events.append(event)
        if len(self._pending) > self._max_event_bytes:
            raise UpstreamError(f"vLLM sent one stream event over {self._max_event_bytes} bytes; refusing it")

    async def aclose(self) -> None:
        # close(), not release(): a client that went away must abort the generation in vLLM.
        self._response.close()


def _error_from(status: int, raw: bytes) -> VllmUpstreamError:
    """vLLM's error body ({"error": {...}} or the older flat {"message": ...}) as our error."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = None
    error = payload.get("error", payload) if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        param = error.get("param")
        return VllmUpstreamError(status, error["message"], param=param if isinstance(param, str) else None)
    text = raw.decode(errors="replace").strip()[:500] or "(empty body)"
    return VllmUpstreamError(status, f"vLLM answered {status}: {text}")


__all__ = ["SseRelay", "VllmConfig", "VllmRuntime", "VllmUpstreamError"]
