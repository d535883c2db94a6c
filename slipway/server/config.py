"""The replica process's settings and its command line.

    python -m slipway.server --package DIR [--host 127.0.0.1] [--port 0] [--replica-id ID]
                             [--port-file PATH] [--drain-timeout 30]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pydantic import BaseModel, Field

from slipway.server.app import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_IN_FLIGHT


class ServerConfig(BaseModel):
    """How one replica process serves its package."""

    package: Path = Field(description="Package folder with slipway.yaml (and model.py for kind custom).")
    host: str = Field("127.0.0.1", description="Address to bind; replicas listen on loopback only.")
    port: int = Field(0, ge=0, le=65535, description="Port to bind; 0 picks a free one (see port_file).")
    replica_id: str = Field(description="Id put on every log line and in /stats.")
    port_file: Path | None = Field(
        None, description="Where to write the bound port once listening (written atomically)."
    )
    drain_timeout: float = Field(30.0, ge=0, description="Seconds SIGTERM waits for in-flight work before exiting.")
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1, description="Largest request body accepted (413 past it).")
    max_in_flight: int = Field(DEFAULT_MAX_IN_FLIGHT, ge=1, description="Requests in flight before new ones get 503.")
    keep_alive_seconds: float = Field(
        75.0, gt=0, description="Idle keep-alive; longer than a gateway's pool idle time so it never reuses a closed socket."
    )
    log_level: str = Field("INFO", description="Root log level (SLIPWAY_LOG_LEVEL).")


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    parser = argparse.ArgumentParser(prog="python -m slipway.server",
                                     description="Serve one slipway model package over HTTP.")
    parser.add_argument("--package", required=True, type=Path, help="Package folder with slipway.yaml.")
    parser.add_argument("--host", default="127.0.0.1", help="Address to bind (default 127.0.0.1).")
    parser.add_argument("--port", default=0, type=int, help="Port; 0 binds a free one (default 0).")
    parser.add_argument("--replica-id", default=os.environ.get("SLIPWAY_REPLICA_ID"),
                        help="Replica id for logs and /stats (default $SLIPWAY_REPLICA_ID or r-<pid>).")
    parser.add_argument("--port-file", type=Path, help="Write the bound port here once listening.")
    parser.add_argument("--drain-timeout", default=30.0, type=float,
                        help="Seconds SIGTERM waits for in-flight requests (default 30).")
    parser.add_argument("--max-body-bytes", default=DEFAULT_MAX_BODY_BYTES, type=int,
                        help=f"Largest request body (default {DEFAULT_MAX_BODY_BYTES}).")
    parser.add_argument("--max-in-flight", default=DEFAULT_MAX_IN_FLIGHT, type=int,
                        help=f"Concurrent requests before 503 (default {DEFAULT_MAX_IN_FLIGHT}).")
    args = parser.parse_args(argv)
    return ServerConfig(
        package=args.package, host=args.host, port=args.port,
        replica_id=args.replica_id or f"r-{os.getpid()}", port_file=args.port_file,
        drain_timeout=args.drain_timeout, max_body_bytes=args.max_body_bytes, max_in_flight=args.max_in_flight,
        log_level=os.environ.get("SLIPWAY_LOG_LEVEL", "INFO"),
    )
