"""The replica process: bind, listen, load in the background, drain on SIGTERM, exit with meaning.

    parse slipway.yaml ──bad──► exit 3 (EXIT_LOAD_FAILED), message on stderr
        │
    bind host:port (0: a free port) ─► uvicorn listening ─► write --port-file (tmp + rename)
        │                                   │
        │                              load runtime in the background
        │                                   ├─ ok: /health/ready 200
        │                                   └─ raised: traceback on stderr, exit 3
        │
    SIGTERM / SIGINT ─► drain (new work 503) ─► wait in-flight == 0 (<= --drain-timeout) ─► exit 0
    a second signal  ─► exit at once

The port file is how a backend learns the port without racing for one: it is written only once
the socket accepts connections, and atomically, so a reader never sees a partial number.
The process ends with `os._exit` once uvicorn has shut down, so a model thread that is still
busy (a load or predict that ignores the drain) cannot hold the exit hostage.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import traceback
from pathlib import Path
from types import FrameType
from typing import NoReturn

import prometheus_client
import uvicorn

from slipway.errors import SlipwayError
from slipway.observe import configure_logging
from slipway.server.app import ReplicaApp
from slipway.server.config import ServerConfig, parse_args
from slipway.spec.package import PACKAGE_FILE, PackageSpec, check_package_files, parse_package
from slipway.spec.replica import EXIT_LOAD_FAILED

log = logging.getLogger("slipway.server")

# After the drain, connections left are idle keep-alives or work past the drain timeout.
_SHUTDOWN_GRACE_SECONDS = 1.0


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of `python -m slipway.server`."""
    config = parse_args(argv)
    configure_logging(config.log_level)
    # One sample per series: the `_created` twins double /metrics for nothing a scraper uses.
    prometheus_client.disable_created_metrics()
    _tag_logs_with(config.replica_id)
    try:
        spec = read_package(config.package)
    except (SlipwayError, OSError) as exc:
        print(f"replica {config.replica_id}: cannot serve {config.package}: {exc}", file=sys.stderr)
        _exit(EXIT_LOAD_FAILED)
    for name, value in spec.runtime.env.items():  # the launcher's environment wins
        os.environ.setdefault(name, value)
    # Runtimes that keep per-replica state on disk (the vllm engine's caches) name it by this id.
    os.environ["SLIPWAY_REPLICA_ID"] = config.replica_id
    _exit(_run(serve(config, spec)))


def read_package(package_dir: Path) -> PackageSpec:
    """Parse and check the package folder; `SpecError` names every problem."""
    package_dir = Path(package_dir)
    spec_file = package_dir / PACKAGE_FILE
    spec = parse_package(spec_file.read_text(), source=str(spec_file))
    check_package_files(spec, {p.name for p in package_dir.iterdir()}, source=str(package_dir))
    return spec


async def serve(config: ServerConfig, spec: PackageSpec) -> int:
    """Serve until drained or failed; returns the process exit code."""
    exit_code = 0
    server: ReplicaServer | None = None

    def on_load_failed(exc: BaseException) -> None:
        nonlocal exit_code
        # Plain text on stderr: the backend keeps it in the replica's log for `slipway logs`.
        print(f"replica {config.replica_id}: load() of package {spec.name!r} failed:", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)
        sys.stderr.flush()
        exit_code = EXIT_LOAD_FAILED
        if server is not None:
            server.should_exit = True

    app = ReplicaApp(spec, config.package, replica_id=config.replica_id, max_body_bytes=config.max_body_bytes,
                     max_in_flight=config.max_in_flight, on_load_failed=on_load_failed)
    listener = bind(config.host, config.port)
    port = listener.getsockname()[1]
    uvicorn_config = uvicorn.Config(
        app, http="httptools", lifespan="on", access_log=False, log_config=None,
        timeout_keep_alive=int(config.keep_alive_seconds), timeout_graceful_shutdown=int(_SHUTDOWN_GRACE_SECONDS),
        server_header=False, date_header=False, proxy_headers=False,
    )
    server = ReplicaServer(uvicorn_config, app=app, drain_timeout=config.drain_timeout)
    serving = asyncio.get_running_loop().create_task(server.serve(sockets=[listener]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.005)
    if server.started and not serving.done() and exit_code == 0:
        if config.port_file is not None:
            write_port_file(config.port_file, port)
        log.info("listening", extra={"url": f"http://{config.host}:{port}", "model": spec.name, "kind": spec.kind})
    await serving
    return exit_code


class ReplicaServer(uvicorn.Server):
    """uvicorn, except that SIGTERM/SIGINT drain before exiting instead of closing the socket."""

    def __init__(self, config: uvicorn.Config, *, app: ReplicaApp, drain_timeout: float) -> None:
        super().__init__(config)
        self.app = app
        self.drain_timeout = drain_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Deliberately not recorded in uvicorn's captured signals: re-raising SIGTERM after the
        # shutdown would turn a clean drain (exit 0) into death by signal.
        if self._drain_task is None and not self.should_exit and self._loop is not None:
            log.info("signal received; draining", extra={"signal": signal.Signals(sig).name})
            self._loop.call_soon_threadsafe(self._start_drain)
        else:
            self.should_exit = self.force_exit = True

    def _start_drain(self) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        self.app.drain()
        if not await self.app.state.wait_idle(self.drain_timeout):
            log.warning("drain timeout; exiting with requests in flight",
                        extra={"in_flight": self.app.state.in_flight, "drain_timeout": self.drain_timeout})
        self.should_exit = True


def bind(host: str, port: int) -> socket.socket:
    """A bound TCP socket (port 0: the kernel picks a free one); uvicorn listens on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def write_port_file(path: Path, port: int) -> None:
    """Write the port number so a reader sees either nothing or the whole number."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(str(port))
    os.replace(tmp, path)


def _tag_logs_with(replica_id: str) -> None:
    class ReplicaIdFilter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.replica_id = replica_id
            record.__dict__.pop("color_message", None)  # uvicorn's ANSI copy of msg
            return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(ReplicaIdFilter())


def _run(coroutine) -> int:
    try:
        import uvloop
    except ImportError:  # uvicorn[standard] brings it; plain asyncio still works
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def _exit(code: int) -> NoReturn:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
