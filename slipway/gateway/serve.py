"""Run one gateway process under uvicorn (uvloop + httptools), bound to 127.0.0.1.

    python -m slipway.gateway --control-url http://127.0.0.1:8000 --admin-key-file ~/.slipway/admin.key
    python -m slipway.gateway --snapshot-file routes.json          # a fixed snapshot (tests, benchmarks)

Usage records go to the store (`--database-url`, else SQLite under `--home`) through the journal in
`<home>/usage`, captured traces through the one in `<home>/traces`. `--port 0` binds a free port; `--port-file` receives the port once it listens.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import uvicorn

from slipway.gateway.app import create_gateway_app
from slipway.gateway.base import StoreTraceSink, StoreUsageSink
from slipway.gateway.config import GatewayConfig
from slipway.gateway.snapshots import HttpSnapshotSource, StaticSnapshotSource
from slipway.observe import configure_logging
from slipway.spec.snapshot import RoutingSnapshot
from slipway.store import Store


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m slipway.gateway", description=__doc__.split("\n")[0])
    routes = parser.add_mutually_exclusive_group(required=True)
    routes.add_argument("--control-url", help="Control plane to long-poll for routing snapshots.")
    routes.add_argument("--snapshot-file", type=Path, help="A RoutingSnapshot JSON file to serve as is.")
    parser.add_argument("--admin-key-file", type=Path, help="File holding the admin key (with --control-url).")
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("SLIPWAY_HOME", "~/.slipway")),
                        help="Slipway home: SQLite database and usage journal live here ($SLIPWAY_HOME).")
    parser.add_argument("--database-url", default=os.environ.get("SLIPWAY_DATABASE_URL"),
                        help="SQLAlchemy URL of the store (default: SQLite under --home).")
    parser.add_argument("--usage-dir", type=Path, help="Usage journal folder (default: <home>/usage).")
    parser.add_argument("--usage-flush-interval", type=float, default=GatewayConfig().usage_flush_interval,
                        help="Seconds between writes of journaled usage records to the store.")
    parser.add_argument("--trace-redactor", default=os.environ.get("SLIPWAY_TRACE_REDACTOR"),
                        help="Redactor applied to captured traces: 'mask_pii' or 'module:function' "
                             "($SLIPWAY_TRACE_REDACTOR).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--port-file", type=Path, help="Write the bound port here once listening.")
    parser.add_argument("--log-level", default="warning")
    return parser.parse_args(argv)


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app, log_level: str = "warning") -> uvicorn.Config:
    """The server settings the gateway is measured with: uvloop, httptools, no per-request extras."""
    return uvicorn.Config(app, loop="uvloop", http="httptools", lifespan="on", access_log=False,
                          proxy_headers=False, server_header=False, date_header=False, log_level=log_level,
                          backlog=2048, timeout_keep_alive=75)


async def serve(args: argparse.Namespace) -> None:
    home = args.home.expanduser()
    home.mkdir(parents=True, exist_ok=True)
    store = Store.open(args.database_url, home)
    if args.snapshot_file is not None:
        source = StaticSnapshotSource(RoutingSnapshot.model_validate_json(args.snapshot_file.read_bytes()))
    else:
        if args.admin_key_file is None:
            raise SystemExit("--control-url needs --admin-key-file (the admin key saved at $SLIPWAY_HOME/admin.key)")
        source = HttpSnapshotSource(args.control_url, args.admin_key_file.expanduser().read_text().strip())
    config = GatewayConfig(usage_journal_dir=(args.usage_dir or home / "usage").expanduser(),
                           usage_flush_interval=args.usage_flush_interval, capture_journal_dir=home / "traces",
                           trace_redactor=args.trace_redactor)
    app = create_gateway_app(source, StoreUsageSink(store), config, traces=StoreTraceSink(store))
    sock = bind(args.host, args.port)
    server = uvicorn.Server(uvicorn_config(app, args.log_level))
    if args.port_file is not None:
        args.port_file.write_text(str(sock.getsockname()[1]))
    try:
        await server.serve(sockets=[sock])
    finally:
        if isinstance(source, HttpSnapshotSource):
            await source.close()
        store.close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging(args.log_level.upper())
    # The usage flusher is a worker thread; with the default 5 ms switch interval every flush can
    # hold the event loop for up to 5 ms. 1 ms keeps the tail latency of proxied requests low.
    sys.setswitchinterval(0.001)
    import uvloop

    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
