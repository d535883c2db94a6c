"""Traces: idempotent batch inserts, filtered newest-first listing, feedback, retention, workspace walls."""

from __future__ import annotations

import pytest

from slipway.store import TraceFilter, TraceRecord

CHAT = {"model": "bot", "messages": [{"role": "user", "content": "hi"}]}
ANSWER = {"choices": [{"message": {"role": "assistant", "content": "hello"}}]}


def _trace(n: int, *, at: float, model="bot", env="production", tags=(), workspace="ws-a") -> TraceRecord:
    return TraceRecord(id=f"req-{n}", workspace_id=workspace, model=model, environment=env, request=CHAT,
                       response=ANSWER, created_at=at, latency_ms=12.5, prompt_tokens=3, completion_tokens=2,
                       tags=tuple(tags))


@pytest.fixture
def traces(store):
    store.traces.insert_many([
        _trace(1, at=100.0, tags=("billing", "vip")),
        _trace(2, at=200.0, tags=("billing",)),
        _trace(3, at=300.0, model="other", env="development"),
        _trace(4, at=400.0, tags=("vip",)),
        _trace(5, at=250.0, workspace="ws-b", tags=("billing",)),
    ])
    return store.traces


def _ids(rows) -> list[str]:
    return [r.id for r in rows]


def test_insert_is_idempotent_on_id_and_keeps_every_field(store):
    assert store.traces.insert_many([_trace(1, at=1.0, tags=("a",)), _trace(2, at=2.0), _trace(2, at=2.0)]) == 2
    assert store.traces.insert_many([_trace(1, at=1.0), _trace(3, at=3.0)]) == 1
    row = store.traces.get("ws-a", "req-1")
    assert (row.model, row.environment, row.request, row.response, row.tags) == ("bot", "production", CHAT,
                                                                                 ANSWER, ("a",))
    assert (row.latency_ms, row.prompt_tokens, row.completion_tokens, row.status_code) == (12.5, 3, 2, 200)
    assert row.feedback_score is None and row.feedback_at is None


def test_large_batches_land_whole(store):
    assert store.traces.insert_many([_trace(i, at=float(i)) for i in range(450)]) == 450
    assert store.traces.count("ws-a") == 450


def test_list_is_newest_first_and_pages_after_an_id(traces):
    assert _ids(traces.list("ws-a")) == ["req-4", "req-3", "req-2", "req-1"]
    first = traces.list("ws-a", limit=2)
    assert _ids(first) == ["req-4", "req-3"]
    assert _ids(traces.list("ws-a", limit=2, after=first[-1].id)) == ["req-2", "req-1"]
    assert traces.list("ws-a", after="req-missing") == []


def test_filters_by_model_environment_and_time(traces):
    assert _ids(traces.list("ws-a", TraceFilter(model="bot"))) == ["req-4", "req-2", "req-1"]
    assert _ids(traces.list("ws-a", TraceFilter(environment="development"))) == ["req-3"]
    assert _ids(traces.list("ws-a", TraceFilter(since=200.0, until=400.0))) == ["req-3", "req-2"]


def test_tags_filter_needs_every_tag(traces):
    assert _ids(traces.list("ws-a", TraceFilter(tags=("billing",)))) == ["req-2", "req-1"]
    assert _ids(traces.list("ws-a", TraceFilter(tags=("billing", "vip")))) == ["req-1"]
    assert traces.list("ws-a", TraceFilter(tags=("nothing",))) == []


def test_feedback_is_recorded_and_filters_by_score_or_correction(traces):
    row = traces.set_feedback("ws-a", "req-1", 500.0, score=0.9, label="good")
    assert (row.feedback_score, row.feedback_label, row.feedback_at) == (0.9, "good", 500.0)
    traces.set_feedback("ws-a", "req-2", 501.0, score=0.2)
    traces.set_feedback("ws-a", "req-3", 502.0, corrected_output="the right answer")
    # A later call that gives only a label keeps the score.
    assert traces.set_feedback("ws-a", "req-2", 503.0, label="bad").feedback_score == 0.2
    assert _ids(traces.list("ws-a", TraceFilter(min_feedback_score=0.5))) == ["req-3", "req-1"]
    assert _ids(traces.list("ws-a", TraceFilter(has_feedback=True))) == ["req-3", "req-2", "req-1"]
    assert _ids(traces.list("ws-a", TraceFilter(has_feedback=False))) == ["req-4"]
    assert traces.get("ws-a", "req-3").training_source()["corrected_output"] == "the right answer"


def test_iterate_reads_everything_oldest_first_in_batches(store):
    store.traces.insert_many([_trace(i, at=float(i // 3)) for i in range(10)])
    rows = list(store.traces.iterate("ws-a", batch_size=3))
    assert [r.created_at for r in rows] == sorted(r.created_at for r in rows)
    assert sorted(_ids(rows)) == sorted(f"req-{i}" for i in range(10))


def test_retention_deletes_only_older_rows(traces):
    assert traces.delete_older_than(250.0, workspace_id="ws-a") == 2
    assert _ids(traces.list("ws-a")) == ["req-4", "req-3"]
    assert traces.delete_older_than(300.0) == 1  # ws-b's trace at 250
    assert traces.count("ws-b") == 0


def test_a_workspace_never_sees_another_workspaces_traces(traces):
    assert _ids(traces.list("ws-b")) == ["req-5"]
    assert traces.get("ws-b", "req-1") is None
    assert traces.set_feedback("ws-b", "req-1", 1.0, score=1.0) is None
    assert traces.get("ws-a", "req-1").feedback_score is None
    assert traces.list("ws-b", after="req-1") == []
    assert traces.count("ws-a", TraceFilter(tags=("billing",))) == 2


def test_filter_round_trips_through_json():
    where = TraceFilter(model="bot", tags=("a", "b"), min_feedback_score=0.5)
    assert where.as_dict() == {"model": "bot", "tags": ["a", "b"], "min_feedback_score": 0.5}
    assert TraceFilter.from_dict(where.as_dict()) == where
    with pytest.raises(ValueError, match="unknown trace filter field"):
        TraceFilter.from_dict({"colour": "red"})
