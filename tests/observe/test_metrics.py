"""The control plane's and the gateway's metric families, read back through the Prometheus parser."""

from __future__ import annotations

import threading

from prometheus_client.parser import text_string_to_metric_families

from slipway.observe.metrics import (
    OVERFLOW_LABEL,
    REPLICA_STATES,
    ControlMetrics,
    DeploymentFigures,
    GatewayMetrics,
    status_class,
)


def samples(page: bytes) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value for every sample on a page."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(page.decode()) for s in family.samples}


def value(page: bytes, name: str, **labels) -> float | None:
    return samples(page).get((name, tuple(sorted(labels.items()))))


def observe_one_request(metrics: GatewayMetrics) -> None:
    with metrics.in_flight_request("echo", "production", "dep-1"):
        pass
    metrics.observe_request("echo", "production", "dep-1", status_code=200, seconds=0.12, prompt_tokens=7,
                            completion_tokens=5)


def test_gateway_metrics_count_a_request_with_its_tokens_and_duration():
    metrics = GatewayMetrics()
    observe_one_request(metrics)
    metrics.observe_request("echo", "production", "dep-1", status_code=502, seconds=0.01)
    metrics.upstream_error("echo", "production", "dep-1", "reset")
    metrics.upstream_error("echo", "production", "dep-1", "cosmic rays")
    metrics.retry("echo", "production", "dep-1")
    page = metrics.render()
    labels = {"model": "echo", "environment": "production", "deployment": "dep-1"}
    assert value(page, "slipway_gateway_requests_total", **labels, status_class="2xx") == 1
    assert value(page, "slipway_gateway_requests_total", **labels, status_class="5xx") == 1
    assert value(page, "slipway_gateway_request_duration_seconds_count", **labels) == 2
    assert value(page, "slipway_gateway_request_duration_seconds_bucket", **labels, le="0.25") == 2
    assert value(page, "slipway_gateway_request_duration_seconds_bucket", **labels, le="0.1") == 1
    assert value(page, "slipway_gateway_in_flight", **labels) == 0
    assert value(page, "slipway_gateway_prompt_tokens_total", **labels) == 7
    assert value(page, "slipway_gateway_completion_tokens_total", **labels) == 5
    assert value(page, "slipway_gateway_upstream_errors_total", **labels, kind="reset") == 1
    assert value(page, "slipway_gateway_upstream_errors_total", **labels, kind="other") == 1
    assert value(page, "slipway_gateway_retries_total", **labels) == 1


def test_in_flight_counts_while_the_block_runs_also_when_it_raises():
    metrics = GatewayMetrics()
    labels = {"model": "m", "environment": "", "deployment": "d"}
    with metrics.in_flight_request("m", None, "d"):
        assert value(metrics.render(), "slipway_gateway_in_flight", **labels) == 1
    try:
        with metrics.in_flight_request("m", None, "d"):
            raise RuntimeError("client went away")
    except RuntimeError:
        pass
    assert value(metrics.render(), "slipway_gateway_in_flight", **labels) == 0


def test_label_sets_past_max_series_are_counted_together():
    metrics = GatewayMetrics(max_series=2)
    for i in range(5):
        metrics.observe_request(f"model-{i}", "production", f"dep-{i}", status_code=200, seconds=0.01)
    page = metrics.render()
    models = {dict(labels).get("model") for name, labels in samples(page) if name == "slipway_gateway_requests_total"}
    assert models == {"model-0", "model-1", OVERFLOW_LABEL}
    assert value(page, "slipway_gateway_requests_total", model=OVERFLOW_LABEL, environment=OVERFLOW_LABEL,
                 deployment=OVERFLOW_LABEL, status_class="2xx") == 3


def test_two_gateways_in_one_process_keep_separate_counts():
    a, b = GatewayMetrics(), GatewayMetrics()
    observe_one_request(a)
    labels = {"model": "echo", "environment": "production", "deployment": "dep-1", "status_class": "2xx"}
    assert value(a.render(), "slipway_gateway_requests_total", **labels) == 1
    assert value(b.render(), "slipway_gateway_requests_total", **labels) is None


def test_status_class():
    assert [status_class(c) for c in (200, 201, 404, 503, 0, 700)] == ["2xx", "2xx", "4xx", "5xx", "0xx", "0xx"]


def test_control_metrics_fleet_is_replaced_whole():
    metrics = ControlMetrics()
    first = DeploymentFigures(model="echo", environment="production", deployment="dep-1",
                              replicas={"desired": 2, "ready": 1, "starting": 1}, autoscaler_desired=2)
    metrics.set_fleet([("echo", "active", 1), ("echo", "inactive", 3)], [first])
    metrics.observe_tick(0.004)
    metrics.tick_failed()
    page = metrics.render()
    labels = {"model": "echo", "environment": "production", "deployment": "dep-1"}
    assert value(page, "slipway_control_deployments", model="echo", status="inactive") == 3
    assert {state: value(page, "slipway_control_replicas", **labels, state=state) for state in REPLICA_STATES} == {
        "desired": 2, "ready": 1, "starting": 1, "draining": 0, "crashed": 0, "failed": 0}
    assert value(page, "slipway_control_autoscaler_desired_replicas", **labels) == 2
    assert value(page, "slipway_control_reconcile_tick_duration_seconds_count") == 1
    assert value(page, "slipway_control_reconcile_tick_duration_seconds_bucket", le="0.005") == 1
    assert value(page, "slipway_control_reconcile_tick_failures_total") == 1

    metrics.set_fleet([("echo", "inactive", 4)], [])  # dep-1 stopped: its series go away
    page = metrics.render()
    assert value(page, "slipway_control_replicas", **labels, state="desired") is None
    assert value(page, "slipway_control_autoscaler_desired_replicas", **labels) is None
    assert value(page, "slipway_control_deployments", model="echo", status="active") is None


def test_rendering_while_the_fleet_is_replaced_never_shows_half_a_fleet():
    metrics = ControlMetrics()
    fleet = [DeploymentFigures(model="m", environment="", deployment=f"dep-{i}", replicas={"desired": 1})
             for i in range(20)]
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            metrics.set_fleet([], fleet)

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        for _ in range(10):
            desired = [v for (name, labels), v in samples(metrics.render()).items()
                       if name == "slipway_control_replicas" and ("state", "desired") in labels]
            assert len(desired) in (0, 20)
    finally:
        stop.set()
        worker.join()
