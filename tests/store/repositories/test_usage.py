"""Usage: idempotent inserts by request_id, and aggregation by model, key and day in SQL."""

from __future__ import annotations

import threading

import pytest

from slipway.spec.usage import UsageRecord

DAY = 86_400.0
T0 = 20_000 * DAY  # a UTC midnight: 2024-10-04


def _record(n: int, *, model="echo", key="key-1", at=T0 + 60, status=200, inp=3, out=5, latency=10.0,
            workspace="ws-a"):
    return UsageRecord(request_id=f"req-{n}", workspace_id=workspace, key_id=key, model_name=model,
                       route="predict", input_units=inp, output_units=out, latency_ms=latency,
                       status_code=status, created_at=at)


def test_insert_is_idempotent_on_request_id(store):
    assert store.usage.insert_many([_record(1), _record(2), _record(2)]) == 2
    assert store.usage.insert_many([_record(1), _record(3)]) == 1
    [total] = store.usage.aggregate("ws-a")
    assert total.requests == 3


def test_concurrent_inserts_of_the_same_records_count_once(store):
    records = [_record(i) for i in range(50)]
    counts: list[int] = []
    threads = [threading.Thread(target=lambda: counts.append(store.usage.insert_many(records))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.usage.aggregate("ws-a")[0].requests == 50


@pytest.fixture
def usage_rows(store):
    store.usage.insert_many([
        _record(1, model="echo", key="key-1", at=T0 + 10, inp=1, out=2, latency=10.0),
        _record(2, model="echo", key="key-2", at=T0 + 20, inp=3, out=4, latency=30.0, status=500),
        _record(3, model="minilm", key="key-1", at=T0 + DAY + 5, inp=10, out=1, latency=5.0),
        _record(4, model="echo", key="key-1", at=T0 + DAY + 6, inp=2, out=2, latency=20.0),
        _record(5, model="echo", key="key-1", at=T0 + 30, workspace="ws-b"),
    ])


def test_totals_without_grouping(store, usage_rows):
    [total] = store.usage.aggregate("ws-a")
    assert (total.requests, total.input_units, total.output_units, total.errors) == (4, 16, 9, 1)
    assert total.avg_latency_ms == pytest.approx(16.25)
    assert store.usage.aggregate("ws-empty") == []


def test_group_by_model(store, usage_rows):
    rows = store.usage.aggregate("ws-a", group_by=["model"])
    assert [(r.model, r.requests, r.input_units) for r in rows] == [("echo", 3, 6), ("minilm", 1, 10)]
    assert rows[0].key_id is None and rows[0].day is None


def test_group_by_day_and_key_in_order(store, usage_rows):
    rows = store.usage.aggregate("ws-a", group_by=["day", "key"])
    assert [(r.day, r.key_id, r.requests) for r in rows] == [
        ("2024-10-04", "key-1", 1), ("2024-10-04", "key-2", 1), ("2024-10-05", "key-1", 2)]


def test_group_by_all_three(store, usage_rows):
    rows = store.usage.aggregate("ws-a", group_by=["model", "key", "day"])
    assert len(rows) == 4 and sum(r.requests for r in rows) == 4


def test_time_range_is_start_inclusive_end_exclusive(store, usage_rows):
    rows = store.usage.aggregate("ws-a", group_by=["model"], start=T0 + 20, end=T0 + DAY + 5)
    assert [(r.model, r.requests) for r in rows] == [("echo", 1)]


def test_unknown_group_is_refused(store):
    with pytest.raises(ValueError, match="cannot group usage by"):
        store.usage.aggregate("ws-a", group_by=["colour"])


def _deployed(n: int, deployment: str | None, **fields) -> UsageRecord:
    return _record(n, **fields).model_copy(update={"deployment_id": deployment})


def test_billable_units_split_groups_by_deployment_and_skip_errors(store):
    store.usage.insert_many([
        _deployed(1, "dep-1", key="key-1", inp=100, out=10),
        _deployed(2, "dep-1", key="key-1", inp=200, out=20),
        _deployed(3, "dep-2", key="key-1", inp=1000, out=0),
        _deployed(4, "dep-2", key="key-2", inp=7, out=7, status=503),  # an error: not billable
        _deployed(5, None, key="key-2", inp=1, out=1, at=T0 + DAY),
        _deployed(6, "dep-1", key="key-1", workspace="ws-b"),
    ])
    units = store.usage.billable_units("ws-a", group_by=["model", "key"])
    assert sorted((u.groups, u.deployment_id, u.requests, u.input_units, u.output_units) for u in units
                  if u.deployment_id) == [
        (("echo", "key-1"), "dep-1", 2, 300, 30), (("echo", "key-1"), "dep-2", 1, 1000, 0)]
    [unattributed] = [u for u in units if u.deployment_id is None]
    assert unattributed.groups == ("echo", "key-2") and unattributed.requests == 1
    [by_day] = store.usage.billable_units("ws-a", group_by=["day"], start=T0 + DAY)
    assert by_day.groups == ("2024-10-05",)
    ungrouped = store.usage.billable_units("ws-a", end=T0 + DAY)
    assert sorted((u.groups, u.deployment_id, u.requests) for u in ungrouped) == [((), "dep-1", 2), ((), "dep-2", 1)]


def test_recent_errors_are_the_deployments_server_errors_newest_first_with_traced_messages(store):
    from slipway.store import TraceRecord

    store.usage.insert_many([
        _deployed(1, "dep-1", status=502, at=T0 + 1),
        _deployed(2, "dep-1", status=500, at=T0 + 3),
        _deployed(3, "dep-1", status=404, at=T0 + 4),   # the caller's mistake, not an error of the deployment
        _deployed(4, "dep-1", status=200, at=T0 + 5),
        _deployed(5, "dep-2", status=500, at=T0 + 6),
        _deployed(6, "dep-1", status=500, at=T0 + 7, workspace="ws-b"),
    ])
    store.traces.insert_many([TraceRecord(
        id="req-2", workspace_id="ws-a", model="echo", environment=None, deployment_id="dep-1",
        request={"text": "hi"}, response={"error": {"message": "CUDA out of memory"}}, status_code=500,
        latency_ms=12.0, prompt_tokens=None, completion_tokens=None, tags=(), created_at=T0 + 3)])
    errors = store.usage.recent_errors("ws-a", "dep-1")
    assert [(e.request_id, e.status_code) for e in errors] == [("req-2", 500), ("req-1", 502)]
    assert errors[0].response == {"error": {"message": "CUDA out of memory"}} and errors[1].response is None
    assert [e.request_id for e in store.usage.recent_errors("ws-a", "dep-1", min_status=400)] == [
        "req-3", "req-2", "req-1"]
    assert len(store.usage.recent_errors("ws-a", "dep-1", limit=1)) == 1
    assert store.usage.recent_errors("ws-b", "dep-2") == []
