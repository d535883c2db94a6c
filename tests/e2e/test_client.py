"""The Python SDK against a real `slipway up`: deploy, stream, promote and roll back."""

from __future__ import annotations

import time

import pytest

import slipway
from slipway.errors import AuthError, NotFoundError
from tests.e2e.conftest import EXAMPLES


def _production(client: slipway.Client, model: str) -> str | None:
    return next(e["deployment_id"] for e in client.model(model)["environments"] if e["name"] == "production")


def test_sdk_deploy_stream_promote_rollback(slipway_up, tmp_path, monkeypatch):
    monkeypatch.setenv("SLIPWAY_HOME", str(slipway_up.home))
    client = slipway.Client(slipway_up.url)

    first = client.wait_ready(client.deploy(EXAMPLES / "echo", promote=True)["id"])
    assert client.predict("echo", {"text": "one"})["echo"] == {"text": "one"}
    chunks = "".join(client.predict_stream("echo", {"text": "a b c", "stream": True}))
    assert chunks.count("data:") >= 3

    # A second deployment (changed package) goes to development first, then is promoted.
    changed = tmp_path / "echo"
    changed.mkdir()
    for name in ("slipway.yaml", "model.py"):
        (changed / name).write_text((EXAMPLES / "echo" / name).read_text())
    (changed / "VERSION").write_text("2\n")
    second = client.wait_ready(client.deploy(changed)["id"])
    assert second["number"] == 2 and _production(client, "echo") == first["id"]
    assert client.predict("echo", {"text": "dev"}, environment="development")["echo"] == {"text": "dev"}

    client.promote("echo", number=2)
    deadline = time.monotonic() + 30
    while _production(client, "echo") != second["id"]:
        assert time.monotonic() < deadline, "promotion never took effect"
        time.sleep(0.2)
    client.rollback("echo")
    while _production(client, "echo") != first["id"]:
        assert time.monotonic() < deadline, "rollback never took effect"
        time.sleep(0.2)
    client.wait_ready(first["id"])
    assert client.predict("echo", {"text": "back"})["echo"] == {"text": "back"}

    with pytest.raises(NotFoundError, match="nope"):
        client.predict("nope", {})
    with pytest.raises(AuthError):
        slipway.Client(slipway_up.url, api_key="sk-slw-not-a-key").models()


def test_one_prometheus_page_carries_the_control_plane_and_the_gateway(slipway_up, monkeypatch):
    """`slipway up` serves GET /metrics without a key: slipway_control_* and, after traffic, slipway_gateway_*."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    monkeypatch.setenv("SLIPWAY_HOME", str(slipway_up.home))
    client = slipway.Client(slipway_up.url)
    client.wait_ready(client.deploy(EXAMPLES / "echo", promote=True)["id"])
    assert client.predict("echo", {"text": "one"})["echo"] == {"text": "one"}

    response = httpx.get(f"{slipway_up.url}/metrics", timeout=10)
    assert response.status_code == 200
    samples = [s for family in text_string_to_metric_families(response.text) for s in family.samples]
    names = {s.name for s in samples}
    assert "slipway_control_reconcile_tick_duration_seconds_count" in names
    answered = [s for s in samples if s.name == "slipway_gateway_requests_total" and s.labels["model"] == "echo"]
    assert sum(s.value for s in answered if s.labels["status_class"] == "2xx") == 1
