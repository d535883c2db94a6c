"""deploy/grafana/slipway.json: the panels asked for, and every metric its queries name really exists.

Metric names are collected from real /metrics outputs, parsed with prometheus_client's parser:
the control plane's GET /metrics, a GatewayMetrics registry after one request, and the GET /metrics
of a real kind `llm` replica (a tiny random Llama on the builtin engine, over HTTP) after one chat
completion, which carries the replica's own families and the engine's `slipway_llm_*`. Each family contributes the sample names Prometheus stores for its type
(`_total` for counters; `_bucket`, `_sum`, `_count` for histograms), so a family counts even
before it has a sample.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from slipway.observe.metrics import GatewayMetrics
from slipway.server.app import ReplicaApp
from slipway.spec.package import parse_package
from tests.control.conftest import LogBackend, ScriptedReconciler, package
from tests.engine.conftest import _save_model
from tests.server.conftest import InThreadReplica
from tests.server.test_llm_replica import CHAT_TEMPLATE, HELLO

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "slipway.json"

REQUIRED_PANELS = {
    "request rate": "Request rate", "latency p50/p99": "Latency p50 / p99", "TTFT": "Time to first token (TTFT)",
    "ITL": "Inter-token latency (ITL)", "tokens/s": "Tokens / s", "in-flight": "In flight", "replicas": "Replicas",
    "KV cache usage": "KV cache usage", "errors": "Errors",
}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", ""),
             "gauge": ("",), "untyped": ("",), "info": ("_info",)}


def stored_names(page: str) -> set[str]:
    """The series names Prometheus would store from one /metrics page."""
    names = set()
    for family in text_string_to_metric_families(page):
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


async def control_plane_page(tmp_path) -> str:
    from slipway.control import ControlPlane, create_control_app
    from slipway.store import Store

    home = tmp_path / "home"
    store = Store.open(None, home)
    try:
        plane = ControlPlane(store, LogBackend(), home=home, reconciler=ScriptedReconciler())
        workspace, _ = plane.bootstrap()
        plane.deploy(workspace.id, package(), promote=True)
        await plane.tick(1.0)
        await plane.tick(2.0)
        await plane.sampler.aclose()
        with TestClient(create_control_app(plane)) as client:
            response = client.get("/metrics")
        assert response.status_code == 200
        return response.text
    finally:
        store.close()


def gateway_page() -> str:
    metrics = GatewayMetrics()
    with metrics.in_flight_request("echo", "production", "dep-1"):
        metrics.observe_request("echo", "production", "dep-1", status_code=200, seconds=0.1, prompt_tokens=3,
                                completion_tokens=4)
    return metrics.render().decode()


@pytest.fixture(scope="module")
def llm_replica_page(tmp_path_factory) -> str:
    """GET /metrics of a real llm replica after one chat completion."""
    folder = tmp_path_factory.mktemp("grafana-llm")
    _save_model(folder, "llama", seed=5)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    spec = parse_package(f"name: tiny\nkind: llm\nweights: {folder}\nresources: {{cpu: 1}}\n"
                         "runtime: {max_model_len: 256, max_num_seqs: 4, dtype: float32}\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLIPWAY_LLM_KV_CACHE_MEMORY", "4Mi")
        with InThreadReplica(ReplicaApp(spec, folder)) as served:
            served.wait_ready()
            with httpx.Client(base_url=served.url, timeout=30) as http:
                answer = http.post("/v1/chat/completions", json={"model": "tiny", "max_tokens": 3, "messages": HELLO})
                assert answer.status_code == 200, answer.text
                page = http.get("/metrics")
    assert page.status_code == 200
    return page.text


def expressions(dashboard: dict) -> list[str]:
    found = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            found.append(query["query"])
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


async def test_every_metric_the_dashboard_queries_exists(dashboard, tmp_path, llm_replica_page):
    known = (stored_names(await control_plane_page(tmp_path)) | stored_names(gateway_page())
             | stored_names(llm_replica_page))
    used = {name for expr in expressions(dashboard) for name in re.findall(r"\bslipway_[A-Za-z0-9_:]+", expr)}
    assert used, "the dashboard queries no slipway metric"
    assert sorted(used - known) == []
    # And the outputs really have what the panels chart (a typo on either side fails here).
    for family in ("slipway_control_replicas", "slipway_control_reconcile_tick_duration_seconds_bucket",
                   "slipway_gateway_requests_total", "slipway_replica_in_flight",
                   "slipway_llm_time_to_first_token_seconds_bucket", "slipway_llm_kv_blocks_used"):
        assert family in known and family in used


def test_the_dashboard_has_the_panels_asked_for(dashboard):
    titles = {panel["title"] for panel in dashboard["panels"]}
    missing = {what: title for what, title in REQUIRED_PANELS.items() if title not in titles}
    assert missing == {}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"] and panel["description"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        assert {t["refId"] for t in panel["targets"]} == {chr(65 + i) for i in range(len(panel["targets"]))}


def test_panels_do_not_overlap(dashboard):
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells.get((x, y))}"
                cells[(x, y)] = panel["title"]
