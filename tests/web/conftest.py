"""A real `slipway up` shared by a test module, with examples/echo deployed and ready."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.e2e.conftest import EXAMPLES, Slipway, free_port

DASHBOARD = {"X-Slipway-Dashboard": "1"}


def wait_ready(node: Slipway, model: str, timeout: float = 60.0) -> dict:
    """The model's production deployment once it has a ready replica."""
    deadline = time.monotonic() + timeout
    with node.http() as admin:
        while time.monotonic() < deadline:
            detail = admin.get(f"/api/v1/models/{model}").json()
            ready = [d for d in detail.get("deployments", []) if d["status"] == "active" and d["ready_replicas"] >= 1]
            if ready:
                return ready[0]
            time.sleep(0.2)
    raise AssertionError(f"{model} not ready after {timeout}s:\n{node.output()}")


@contextmanager
def sign_in(node: Slipway, key: str) -> Iterator[httpx.Client]:
    """A client holding a dashboard session (and no key header)."""
    with httpx.Client(base_url=node.url, timeout=30, headers=DASHBOARD) as client:
        response = client.post("/ui/session", json={"key": key})
        assert response.status_code == 200, response.text
        yield client


@pytest.fixture(scope="module")
def slipway_echo(tmp_path_factory):
    """`slipway up` with examples/echo deployed and promoted (module-wide: starting one takes seconds)."""
    home = tmp_path_factory.mktemp("web") / "home"
    home.mkdir()
    node = Slipway(home=home, port=free_port())
    node.start()
    try:
        node.cli("deploy", str(EXAMPLES / "echo"), "--promote")
        wait_ready(node, "echo")
        yield node
    finally:
        node.cleanup()
