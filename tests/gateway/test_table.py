"""Route table resolution: environments, fallbacks, ownership by workspace."""

from __future__ import annotations

import pytest

from slipway.errors import NotFoundError
from slipway.gateway.table import RouteTable
from slipway.spec.snapshot import ModelEntry, RoutingSnapshot
from tests.gateway.conftest import deployment, world


def table(version: int = 1) -> RouteTable:
    return RouteTable.build(world(["http://127.0.0.1:1"], version=version))


def test_name_alone_is_production_else_development():
    t = table()
    assert t.resolve_model("ws-a", "echo").route.entry.deployment_id == "d-echo"
    assert t.resolve_model("ws-a", "echo").environment == "production"
    drafts = t.resolve_model("ws-a", "drafts")
    assert (drafts.route.entry.deployment_id, drafts.environment) == ("d-drafts", "development")
    assert t.resolve_model("ws-a", "echo@development").route.entry.deployment_id == "d-echo-dev"
    assert t.resolve_model("ws-a", "echo", "development").model_name == "echo"


def test_workspaces_see_only_their_own():
    t = table()
    assert t.resolve_model("ws-b", "echo").route.entry.deployment_id == "d-b-echo"
    with pytest.raises(NotFoundError, match="'embedder' does not exist"):
        t.resolve_model("ws-b", "embedder")
    with pytest.raises(NotFoundError):
        t.resolve_deployment("ws-b", "d-echo")
    assert t.resolve_deployment("ws-a", "d-emb").model_name == "embedder"


def test_deployment_owner_is_inferred_when_the_snapshot_omits_it():
    snapshot = RoutingSnapshot(
        version=1,
        models=[ModelEntry(workspace_id="ws-a", name="solo", environments={}),
                ModelEntry(workspace_id="ws-a", name="twin", environments={}),
                ModelEntry(workspace_id="ws-b", name="twin", environments={})],
        deployments=[deployment("d-solo", "solo", []), deployment("d-twin", "twin", [])])
    t = RouteTable.build(snapshot)
    assert t.resolve_deployment("ws-a", "d-solo").model_name == "solo"
    for workspace in ("ws-a", "ws-b"):  # the name is ambiguous: nobody may reach it
        with pytest.raises(NotFoundError):
            t.resolve_deployment(workspace, "d-twin")


def test_errors_say_what_exists():
    t = table()
    with pytest.raises(NotFoundError, match="it serves: development"):
        t.resolve_model("ws-a", "drafts@production")


def test_policy_instances_survive_a_new_snapshot_and_unknown_policies_fall_back(monkeypatch):
    import slipway.routing.registry

    first = table()
    second = RouteTable.build(world(["http://127.0.0.1:1"], version=2), previous=first)
    assert second.deployments["d-echo"].policy is first.deployments["d-echo"].policy
    # A policy this gateway does not know (e.g. an older gateway than its control plane).
    monkeypatch.delitem(slipway.routing.registry._POLICIES, "kv_aware")
    odd = world(deployment("d-echo", "echo", ["http://127.0.0.1:1"], routing="kv_aware"))
    assert RouteTable.build(odd).deployments["d-echo"].policy.name == "least_load"
