"""Canary splits in the route table and through a running gateway: the share, readiness, adapters, usage."""

from __future__ import annotations

import itertools
import random
from collections import Counter

from slipway.gateway.table import RouteTable
from slipway.spec.snapshot import AdapterEntry, CanaryEntry, ModelEntry, RoutingSnapshot
from tests.gateway.conftest import ADMIN_A, deployment, world

PICKS = 1_000
# Binomial spread of 1,000 picks at 10% is about 9.5; the seeds are fixed, so this never flakes.
TOLERANCE = 30


def with_canary(snapshot: RoutingSnapshot, percent: int, *, ready: bool = True,
                url: str = "http://127.0.0.1:2") -> RoutingSnapshot:
    """ws-a's echo production gets d-echo-canary as its canary at `percent`."""
    snapshot.deployments.append(deployment("d-echo-canary", "echo", [url], ready=ready))
    echo = next(m for m in snapshot.models if (m.workspace_id, m.name) == ("ws-a", "echo"))
    echo.canaries["production"] = CanaryEntry(deployment_id="d-echo-canary", percent=percent)
    return snapshot


def served(table: RouteTable, requested: str = "echo", picks: int = PICKS) -> Counter:
    return Counter(table.resolve_model("ws-a", requested).route.entry.deployment_id for _ in range(picks))


def test_the_canary_gets_its_percent_of_1000_deterministic_picks():
    for percent, seed in ((10, 7), (50, 11), (1, 3)):
        table = RouteTable.build(with_canary(world(["http://127.0.0.1:1"]), percent),
                                 random_source=random.Random(seed).random)
        counts = served(table)
        assert set(counts) <= {"d-echo", "d-echo-canary"}
        assert abs(counts["d-echo-canary"] - percent * PICKS / 100) <= TOLERANCE, (percent, counts)
    # An evenly spread source shows the rule exactly: draws below percent/100 go to the canary.
    even = itertools.cycle(i / PICKS for i in range(PICKS))
    table = RouteTable.build(with_canary(world(["http://127.0.0.1:1"]), 10), random_source=lambda: next(even))
    assert served(table) == Counter({"d-echo": 900, "d-echo-canary": 100})


def test_the_split_keeps_the_environment_and_touches_no_other_environment():
    table = RouteTable.build(with_canary(world(["http://127.0.0.1:1"]), 50), random_source=lambda: 0.0)
    target = table.resolve_model("ws-a", "echo")
    assert (target.route.entry.deployment_id, target.environment, target.model_name) == (
        "d-echo-canary", "production", "echo")
    assert table.resolve_model("ws-a", "echo@development").route.entry.deployment_id == "d-echo-dev"
    assert table.resolve_model("ws-b", "echo").route.entry.deployment_id == "d-b-echo"


def test_a_canary_without_a_ready_replica_gets_nothing():
    starting = RouteTable.build(with_canary(world(["http://127.0.0.1:1"]), 99, ready=False),
                                random_source=lambda: 0.0)
    assert served(starting, picks=100) == Counter({"d-echo": 100})
    gone = with_canary(world(["http://127.0.0.1:1"]), 99)
    gone.deployments = [d for d in gone.deployments if d.deployment_id != "d-echo-canary"]
    assert served(RouteTable.build(gone, random_source=lambda: 0.0), picks=100) == Counter({"d-echo": 100})


def test_a_canary_of_another_workspace_is_never_used():
    snapshot = with_canary(world(["http://127.0.0.1:1"]), 99)
    snapshot.models[0].canaries["production"] = CanaryEntry(deployment_id="d-b-echo", percent=99)
    assert served(RouteTable.build(snapshot, random_source=lambda: 0.0), picks=10) == Counter({"d-echo": 10})


def test_a_fine_tuned_model_follows_its_base_environments_split():
    snapshot = with_canary(world(["http://127.0.0.1:1"]), 10)
    for entry in snapshot.deployments:
        if entry.model_name == "echo":
            entry.kind = "llm"
    adapter = AdapterEntry(base_model="echo", path="/adapters/router")
    snapshot.models.append(ModelEntry(workspace_id="ws-a", name="echo:ft-router", adapter=adapter))
    table = RouteTable.build(snapshot, random_source=random.Random(5).random)
    counts = served(table, "echo:ft-router")
    assert abs(counts["d-echo-canary"] - 100) <= TOLERANCE and counts["d-echo"] + counts["d-echo-canary"] == PICKS
    target = table.resolve_model("ws-a", "echo:ft-router")
    assert (target.adapter, target.model_name, target.environment) == (adapter, "echo:ft-router", "production")


def test_a_rebuilt_table_keeps_its_random_source():
    first = RouteTable.build(with_canary(world(["http://127.0.0.1:1"], version=1), 50), random_source=lambda: 0.99)
    second = RouteTable.build(with_canary(world(["http://127.0.0.1:1"], version=2), 50), previous=first)
    assert second.random_source is first.random_source
    assert second.resolve_model("ws-a", "echo").route.entry.deployment_id == "d-echo"


def test_usage_through_the_gateway_names_the_deployment_that_served(replicas, gateway):
    main, canary = replicas(2)
    gw = gateway(with_canary(world([main.url]), 50, url=canary.url))
    requests = 40
    with gw.client(ADMIN_A) as http:
        for _ in range(requests):
            assert http.post("/models/echo/predict", json={"text": "hi"}).status_code == 200
    records = gw.sink.wait_for(requests)
    by_deployment = Counter(r.deployment_id for r in records)
    # 40 fair coin flips all landing on one side has odds of about 1 in 5e11.
    assert set(by_deployment) == {"d-echo", "d-echo-canary"}
    assert (by_deployment["d-echo"], by_deployment["d-echo-canary"]) == (main.requests, canary.requests)
    assert {r.environment for r in records} == {"production"}
