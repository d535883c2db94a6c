"""What the learning-loop API tests share: an API with dataset files, a second workspace, rows, traces,
llm packages, and uvicorn in a thread for the official openai client.

    learning_api     Api (tests/control/conftest.py) whose app has LearningServices(DatasetCatalog)
    other_key        an admin key of a second workspace: every new route must answer it 404
    ServerThread     the control app on a free 127.0.0.1 port
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from slipway.control.learning import LearningServices
from slipway.store import TraceRecord
from slipway.train.catalog import DatasetCatalog
from tests.control.conftest import Api, package


def chat_row(i: int) -> dict:
    return {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": f"What is {i} plus {i}?"},
                         {"role": "assistant", "content": f"It is {2 * i}."}]}


def jsonl(rows: list) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def llm_package(name: str, weights: Path | str) -> bytes:
    return package(f"name: {name}\nkind: llm\nweights: {weights}\n", model=None)


def trace(n: int, workspace_id: str, *, at: float, model: str = "bot", answer: str = "hello", tags=(),
          environment: str = "production") -> TraceRecord:
    return TraceRecord(id=f"req-{n}", workspace_id=workspace_id, model=model, environment=environment,
                       request={"model": model, "messages": [{"role": "user", "content": f"question {n}"}]},
                       response={"choices": [{"message": {"role": "assistant", "content": answer}}]},
                       created_at=at, latency_ms=10.0, prompt_tokens=3, completion_tokens=1, tags=tuple(tags))


class Wakes:
    """Counts the API's calls to wake the job supervisor."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def wakes() -> Wakes:
    return Wakes()


@pytest.fixture
def learning(store, home, wakes) -> LearningServices:
    return LearningServices(datasets=DatasetCatalog(store, home), wake_jobs=wakes)


@pytest.fixture
def learning_api(plane, bootstrapped, learning):
    from slipway.control import create_control_app

    with TestClient(create_control_app(plane, learning=learning), raise_server_exceptions=False) as client:
        yield Api(client=client, admin_key=bootstrapped[1], plane=plane)


@pytest.fixture
def other_key(plane, bootstrapped) -> str:
    _, created = plane.create_workspace("other")
    return created.secret


def upload(api: Api, rows: list, **params):
    return api.post("/api/v1/datasets", content=jsonl(rows), params=params,
                    headers={"Content-Type": "application/jsonl"})


class ServerThread:
    """uvicorn serving `app` on a free 127.0.0.1 port in a background thread."""

    def __init__(self, app) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server thread did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
