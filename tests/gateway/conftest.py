"""Real servers on 127.0.0.1 for gateway tests: fake replicas and the gateway, each uvicorn in a thread.

The world the tests route in:

    workspace ws-a   model echo      production -> d-echo (replicas passed in), development -> d-echo-dev
                     model embedder  production -> d-emb
                     model drafts    development only -> d-drafts
    workspace ws-b   model echo      production -> d-b-echo   (same name as ws-a's: never visible to ws-a)

    keys: ADMIN_A, INVOKE_A, LIMITED_A (only 'embedder'), METRICS_A, ADMIN_B
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn

from slipway.gateway import GatewayConfig, StaticSnapshotSource, create_gateway_app
from slipway.gateway.serve import uvicorn_config
from slipway.spec.snapshot import DeploymentEntry, KeyEntry, ModelEntry, ReplicaEntry, RoutingSnapshot
from slipway.spec.usage import UsageRecord
from tests.gateway.replica_app import FakeReplica

ADMIN_A = "sk-slw-" + "a" * 40
INVOKE_A = "sk-slw-" + "i" * 40
LIMITED_A = "sk-slw-" + "l" * 40
METRICS_A = "sk-slw-" + "m" * 40
ADMIN_B = "sk-slw-" + "b" * 40


def key_entry(secret: str, key_id: str, workspace: str, scopes: list[str], models: list[str] | None = None) -> KeyEntry:
    return KeyEntry(key_id=key_id, key_hash=hashlib.sha256(secret.encode()).hexdigest(), workspace_id=workspace,
                    scopes=scopes, models=models)


KEYS = [
    key_entry(ADMIN_A, "k-admin-a", "ws-a", ["admin"]),
    key_entry(INVOKE_A, "k-invoke-a", "ws-a", ["invoke"]),
    key_entry(LIMITED_A, "k-limited-a", "ws-a", ["invoke"], ["embedder"]),
    key_entry(METRICS_A, "k-metrics-a", "ws-a", ["metrics"]),
    key_entry(ADMIN_B, "k-admin-b", "ws-b", ["admin"]),
]


def deployment(deployment_id: str, model: str, urls: list[str], *, ready: bool = True, routing: str = "least_load",
               workspace: str | None = None) -> DeploymentEntry:
    return DeploymentEntry(deployment_id=deployment_id, model_name=model, number=1, kind="custom", status="active",
                           routing=routing, workspace_id=workspace,
                           replicas=[ReplicaEntry(replica_id=f"{deployment_id}-r{i}", url=url, ready=ready)
                                     for i, url in enumerate(urls)])


def world(echo: list[DeploymentEntry | str] | DeploymentEntry, *, version: int = 1, others: str = "http://127.0.0.1:9",
          keys: list[KeyEntry] | None = None) -> RoutingSnapshot:
    """The snapshot described in the module docstring; `echo` is d-echo or the URLs of its replicas."""
    echo_entry = echo if isinstance(echo, DeploymentEntry) else deployment("d-echo", "echo", list(echo))
    return RoutingSnapshot(
        version=version,
        keys=KEYS if keys is None else keys,
        models=[
            ModelEntry(workspace_id="ws-a", name="echo",
                       environments={"production": "d-echo", "development": "d-echo-dev"}),
            ModelEntry(workspace_id="ws-a", name="embedder", environments={"production": "d-emb"}),
            ModelEntry(workspace_id="ws-a", name="drafts", environments={"development": "d-drafts"}),
            ModelEntry(workspace_id="ws-b", name="echo", environments={"production": "d-b-echo"}),
        ],
        deployments=[
            echo_entry,
            deployment("d-echo-dev", "echo", [others]),
            deployment("d-emb", "embedder", [others]),
            deployment("d-drafts", "drafts", [others]),
            deployment("d-b-echo", "echo", [others], workspace="ws-b"),
        ],
    )


class ServerThread:
    """uvicorn serving `app` on a free 127.0.0.1 port in a background thread."""

    def __init__(self, app) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn_config(app, "error"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server thread did not start"
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


class CollectingSink:
    """A UsageSink that keeps what it is given (idempotent on request_id, as the store is)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[str, UsageRecord] = {}
        self.writes = 0

    def write(self, records: list[UsageRecord]) -> None:
        with self.lock:
            self.writes += 1
            for record in records:
                self.records.setdefault(record.request_id, record)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[UsageRecord]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.records) >= count:
                    return list(self.records.values())
            time.sleep(0.02)
        raise AssertionError(f"the sink got {len(self.records)} records, expected {count}")


@dataclass
class Gateway:
    source: StaticSnapshotSource
    sink: CollectingSink
    server: ServerThread
    servers: list[ServerThread] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def app(self):
        return self.server.app

    def client(self, key: str | None = ADMIN_A, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10, **kwargs)


@pytest.fixture
def replicas():
    """start(n) -> n FakeReplica objects, each served on its own port (`.url` set)."""
    started: list[ServerThread] = []

    def start(count: int) -> list[FakeReplica]:
        fakes = []
        for i in range(count):
            fake = FakeReplica(f"fake-{len(started)}")
            server = ServerThread(fake).start()
            fake.url = server.url
            fake.server = server
            started.append(server)
            fakes.append(fake)
        return fakes

    yield start
    for server in started:
        server.app.release.set()  # held streams and delayed answers finish, so the server stops at once
        server.stop()


@pytest.fixture
def gateway(tmp_path: Path):
    """start(snapshot, on_demand=None, **config) -> a running Gateway over a StaticSnapshotSource and a
    CollectingSink."""
    started: list[ServerThread] = []

    def start(snapshot: RoutingSnapshot, on_demand=None, **config) -> Gateway:
        config.setdefault("usage_journal_dir", tmp_path / f"usage-{len(started)}")
        config.setdefault("usage_flush_interval", 0.05)
        source = StaticSnapshotSource(snapshot)
        sink = CollectingSink()
        app = create_gateway_app(source, sink, GatewayConfig(**config), on_demand=on_demand)
        server = ServerThread(app).start()
        started.append(server)
        return Gateway(source, sink, server)

    yield start
    for server in started:
        server.stop()
