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
