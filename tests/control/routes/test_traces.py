"""Trace routes: filtered newest-first listing with paging, one trace, feedback, workspace walls."""

from __future__ import annotations

import pytest

from .learning import learning, learning_api, other_key, trace, wakes  # noqa: F401


@pytest.fixture
def traces(learning_api, workspace):
    learning_api.plane.store.traces.insert_many([
        trace(1, workspace.id, at=100.0, tags=("billing", "vip")),
        trace(2, workspace.id, at=200.0, tags=("billing",)),
        trace(3, workspace.id, at=300.0, model="other", environment="development"),
        trace(4, workspace.id, at=400.0, tags=("vip",)),
    ])
    return learning_api


def _ids(response) -> list[str]:
    return [t["id"] for t in response.json()["data"]]


def test_list_filters_newest_first(traces):
    assert _ids(traces.get("/api/v1/traces")) == ["req-4", "req-3", "req-2", "req-1"]
    assert _ids(traces.get("/api/v1/traces", params={"model": "bot"})) == ["req-4", "req-2", "req-1"]
    assert _ids(traces.get("/api/v1/traces", params={"environment": "development"})) == ["req-3"]
    assert _ids(traces.get("/api/v1/traces", params={"tag": ["billing", "vip"]})) == ["req-1"]
    assert _ids(traces.get("/api/v1/traces", params={"since": 200, "until": "1970-01-01T00:06:40Z"})) == ["req-3",
                                                                                                          "req-2"]
    bad = traces.get("/api/v1/traces", params={"since": "soon"})
    assert bad.status_code == 400 and "since" in bad.json()["error"]["message"]


def test_paging_with_after_and_limit(traces):
    first = traces.get("/api/v1/traces", params={"limit": 3}).json()
    assert [t["id"] for t in first["data"]] == ["req-4", "req-3", "req-2"] and first["has_more"] is True
    rest = traces.get("/api/v1/traces", params={"limit": 3, "after": "req-2"}).json()
    assert [t["id"] for t in rest["data"]] == ["req-1"] and rest["has_more"] is False


def test_one_trace_and_feedback(traces):
    one = traces.get("/api/v1/traces/req-2").json()
    assert one["object"] == "trace" and one["request"]["messages"][0]["content"] == "question 2"
    assert one["feedback_score"] is None and one["tags"] == ["billing"]
    scored = traces.post("/api/v1/traces/req-2/feedback", json={"score": 0.25, "label": "too-long"}).json()
    assert (scored["feedback_score"], scored["feedback_label"], scored["corrected_output"]) == (0.25, "too-long", None)
    corrected = traces.post("/api/v1/traces/req-2/feedback", json={"corrected_output": "short"}).json()
    assert (corrected["feedback_score"], corrected["corrected_output"]) == (0.25, "short")
    assert corrected["feedback_at"] is not None
    assert _ids(traces.get("/api/v1/traces", params={"has_feedback": "true"})) == ["req-2"]
    assert _ids(traces.get("/api/v1/traces", params={"min_feedback_score": 0.9})) == ["req-2"]  # corrected counts


@pytest.mark.parametrize("body, words", [
    ({"score": 1.5}, "score"),
    ({}, "give at least one of score, label, corrected_output"),
    ({"rating": 1}, "rating"),
])
def test_bad_feedback_is_refused(traces, body, words):
    response = traces.post("/api/v1/traces/req-1/feedback", json=body)
    assert response.status_code == 400 and words in response.json()["error"]["message"]


def test_unknown_and_foreign_traces_are_not_found(traces, other_key):
    assert traces.get("/api/v1/traces/req-9").status_code == 404
    assert traces.post("/api/v1/traces/req-9/feedback", json={"score": 1}).status_code == 404
    assert traces.get("/api/v1/traces/req-1", key=other_key).status_code == 404
    response = traces.post("/api/v1/traces/req-1/feedback", json={"score": 1}, key=other_key)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert traces.get("/api/v1/traces", key=other_key).json()["data"] == []
    assert traces.get("/api/v1/traces/req-1").json()["feedback_score"] is None
