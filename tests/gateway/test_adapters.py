"""Fine-tuned models on their base's replicas: resolution in the route table, and the adapter
headers the gateway writes (and never takes from a client)."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from slipway.errors import NotFoundError
from slipway.gateway.table import RouteTable
from slipway.spec.snapshot import AdapterEntry, ModelEntry
from tests.gateway.conftest import deployment, world

ADAPTER_PATH = "/home/slipway/fine_tuning/ftjob-1/adapter dir"


def with_adapters(snapshot, *, base_kind: str = "llm"):
    for entry in snapshot.deployments:
        if entry.model_name == "echo":
            entry.kind = base_kind
    snapshot.models += [
        ModelEntry(workspace_id="ws-a", name="echo:ft-router",
                   adapter=AdapterEntry(base_model="echo", path=ADAPTER_PATH)),
        ModelEntry(workspace_id="ws-a", name="gone:ft-x", adapter=AdapterEntry(base_model="gone", path="/x")),
        ModelEntry(workspace_id="ws-a", name="embedder:ft-x", adapter=AdapterEntry(base_model="embedder", path="/x")),
    ]
    return snapshot


def test_a_fine_tuned_model_resolves_to_its_base_deployment_with_the_adapter():
    t = RouteTable.build(with_adapters(world(["http://127.0.0.1:1"])))
    target = t.resolve_model("ws-a", "echo:ft-router")
    assert target.route.entry.deployment_id == "d-echo"
    assert (target.model_name, target.environment) == ("echo:ft-router", "production")
    assert target.adapter == AdapterEntry(base_model="echo", path=ADAPTER_PATH)
    development = t.resolve_model("ws-a", "echo:ft-router@development")
    assert development.route.entry.deployment_id == "d-echo-dev" and development.adapter is not None
    assert t.resolve_model("ws-a", "echo").adapter is None, "the base itself is served plain"
    assert "echo:ft-router" in t.model_ids("ws-a", None)
    assert "echo:ft-router@development" in t.model_ids("ws-a", None)


def test_fine_tuned_models_fail_clearly_where_they_cannot_be_served():
    t = RouteTable.build(with_adapters(world(["http://127.0.0.1:1"])))
    with pytest.raises(NotFoundError, match="adapter of 'gone'"):
        t.resolve_model("ws-a", "gone:ft-x")
    with pytest.raises(NotFoundError, match="adapters need an llm deployment"):
        t.resolve_model("ws-a", "embedder:ft-x")
    with pytest.raises(NotFoundError, match="does not exist"):  # another workspace's adapter is invisible
        t.resolve_model("ws-b", "echo:ft-router")
    with pytest.raises(NotFoundError, match="base model's replicas: .*no deployment in environment 'staging'"):
        t.resolve_model("ws-a", "echo:ft-router@staging")


def test_a_fine_tuned_model_with_its_own_deployment_is_served_by_it():
    snapshot = with_adapters(world(["http://127.0.0.1:1"]))
    snapshot.models[-3].environments = {"production": "d-merged"}
    snapshot.deployments.append(deployment("d-merged", "echo:ft-router", ["http://127.0.0.1:2"]))
    target = RouteTable.build(snapshot).resolve_model("ws-a", "echo:ft-router")
    assert target.route.entry.deployment_id == "d-merged" and target.adapter is None


def test_the_replica_is_told_the_adapter_and_a_client_cannot_forge_it(replicas, gateway):
    (replica,) = replicas(1)
    gw = gateway(with_adapters(world([replica.url])))
    forged = {"x-slipway-adapter": "evil", "x-slipway-adapter-path": "/etc"}
    with gw.client() as http:
        response = http.post("/v1/chat/completions", headers=forged,
                             json={"model": "echo:ft-router", "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 200, response.text
        assert unquote(replica.last_headers[b"x-slipway-adapter"].decode()) == "echo:ft-router"
        assert unquote(replica.last_headers[b"x-slipway-adapter-path"].decode()) == ADAPTER_PATH
        response = http.post("/v1/chat/completions", headers=forged,
                             json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 200, response.text
        assert b"x-slipway-adapter" not in replica.last_headers
        assert b"x-slipway-adapter-path" not in replica.last_headers
