"""Dataset routes: upload (body or multipart), every bad line reported with nothing written, traces, paging, delete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slipway.train.datasets import content_hash

from .learning import chat_row, jsonl, learning, learning_api, other_key, trace, upload, wakes  # noqa: F401


def test_upload_as_the_body_splits_writes_files_and_records_the_hash(learning_api, home):
    rows = [chat_row(i) for i in range(20)]
    response = upload(learning_api, rows, name="arith", validation_fraction=0.25, seed=3)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["object"] == "dataset" and body["id"].startswith("ds-") and body["name"] == "arith"
    assert body["source"] == "upload" and body["warnings"] == []
    assert body["train_rows"] + body["validation_rows"] == 20 and body["validation_rows"] >= 1
    assert body["content_hash"] == content_hash(rows)
    folder = home / "datasets" / body["id"]
    train = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    validation = [json.loads(line) for line in (folder / "validation.jsonl").read_text().splitlines()]
    canonical = lambda row: json.dumps(row, sort_keys=True)  # noqa: E731
    assert len(train) == body["train_rows"]
    assert sorted(map(canonical, train + validation)) == sorted(map(canonical, rows))
    assert json.loads((folder / "manifest.json").read_text())["seed"] == 3
    assert learning_api.get(f"/api/v1/datasets/{body['id']}").json() == {k: v for k, v in body.items()
                                                                         if k != "warnings"}


def test_multipart_upload_takes_the_file_part_and_names_it_after_the_file(learning_api):
    part = ("support.jsonl", jsonl([chat_row(1), chat_row(2)]), "application/jsonl")
    response = learning_api.post("/api/v1/datasets", files={"file": part}, data={"validation_fraction": "0"})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "support"
    assert (response.json()["train_rows"], response.json()["validation_rows"]) == (2, 0)
    missing = learning_api.post("/api/v1/datasets", files={"data": ("x.jsonl", b"{}", "text/plain")})
    assert missing.status_code == 400 and "part named `file`" in missing.json()["error"]["message"]


def test_every_bad_line_is_reported_by_number_and_nothing_is_written(learning_api, home):
    lines = [json.dumps(chat_row(1)), "{not json", json.dumps(chat_row(2)),
             json.dumps({"messages": [{"role": "wizard", "content": "x"}]}), "", json.dumps({"prompt": "old format"})]
    response = learning_api.post("/api/v1/datasets", content="\n".join(lines).encode(),
                                 headers={"Content-Type": "application/jsonl"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_dataset" and error["type"] == "invalid_request_error"
    for words in ("line 2: invalid JSON", "line 4: messages[0] has unknown role 'wizard'", "line 6: missing \"messages\""):
        assert words in error["message"], error["message"]
    assert "line 1" not in error["message"] and "line 3" not in error["message"]
    assert learning_api.get("/api/v1/datasets").json()["data"] == []
    assert not (home / "datasets").exists() or not any((home / "datasets").iterdir())


def test_warnings_are_returned_and_empty_or_oversized_bodies_refused(learning_api, monkeypatch):
    trailing_user = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                  {"role": "user", "content": "c"}]}
    created = upload(learning_api, [trailing_user, chat_row(1)]).json()
    assert created["warnings"] == ["line 1: last message is not from the assistant; turns after the last assistant "
                                   "message are ignored in training (warning)"]
    empty = learning_api.post("/api/v1/datasets", content=b"", headers={"Content-Type": "application/jsonl"})
    assert empty.status_code == 400 and "body is empty" in empty.json()["error"]["message"]
    blank = learning_api.post("/api/v1/datasets", content=b"\n\n", headers={"Content-Type": "application/jsonl"})
    assert blank.status_code == 400 and "has no rows" in blank.json()["error"]["message"]
    from slipway.control.routes import datasets

    monkeypatch.setattr(datasets, "MAX_UPLOAD_BYTES", 100)
    big = upload(learning_api, [chat_row(i) for i in range(10)])
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    bad_fraction = upload(learning_api, [chat_row(1)], validation_fraction=1.5)
    assert bad_fraction.status_code == 400


def test_list_pages_newest_first_and_delete_removes_the_folder(learning_api):
    ids = [upload(learning_api, [chat_row(i)], name=f"d{i}").json()["id"] for i in range(3)]
    first = learning_api.get("/api/v1/datasets", params={"limit": 2}).json()
    assert [d["id"] for d in first["data"]] == ids[::-1][:2] and first["has_more"] is True
    rest = learning_api.get("/api/v1/datasets", params={"limit": 2, "after": first["data"][-1]["id"]}).json()
    assert [d["id"] for d in rest["data"]] == [ids[0]] and rest["has_more"] is False

    row = learning_api.plane.store.datasets.get(learning_api.plane.system_workspace_id, ids[0])
    assert Path(row.path).is_dir()
    assert learning_api.delete(f"/api/v1/datasets/{ids[0]}").json() == {"id": ids[0], "object": "dataset",
                                                                        "deleted": True}
    assert not Path(row.path).exists()
    assert learning_api.get(f"/api/v1/datasets/{ids[0]}").status_code == 404
    assert learning_api.delete(f"/api/v1/datasets/{ids[0]}").status_code == 404


def test_a_dataset_in_use_by_an_unfinished_job_cannot_be_deleted(learning_api, workspace):
    dataset_id = upload(learning_api, [chat_row(1)]).json()["id"]
    learning_api.plane.store.fine_tuning.create_job(workspace.id, model="tiny", training_file=dataset_id,
                                                    hyperparameters={}, seed=0, now=1.0)
    response = learning_api.delete(f"/api/v1/datasets/{dataset_id}")
    assert response.status_code == 409 and "ftjob-" in response.json()["error"]["message"]


def test_from_traces_filters_and_prefers_corrected_outputs(learning_api, workspace):
    store = learning_api.plane.store
    store.traces.insert_many([
        trace(1, workspace.id, at=100.0, answer="draft one", tags=("billing",)),
        trace(2, workspace.id, at=200.0, answer="fine answer", tags=("billing",)),
        trace(3, workspace.id, at=300.0, answer="bad answer", tags=("billing",)),
        trace(4, workspace.id, at=400.0, model="other", tags=("billing",)),
        trace(5, workspace.id, at=500.0, answer="untagged"),
    ])
    store.traces.set_feedback(workspace.id, "req-1", 1.0, score=0.1, corrected_output="the corrected one")
    store.traces.set_feedback(workspace.id, "req-2", 1.0, score=0.9)
    store.traces.set_feedback(workspace.id, "req-3", 1.0, score=0.2)
    response = learning_api.post("/api/v1/datasets/from_traces", json={
        "name": "billing", "model": "bot", "tags": ["billing"], "min_feedback_score": 0.5, "since": "1970-01-01",
        "validation_fraction": 0})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["source"] == "traces" and body["train_rows"] == 2
    assert body["filters"] == {"model": "bot", "tags": ["billing"], "min_feedback_score": 0.5, "since": 0.0}
    row = store.datasets.get(workspace.id, body["id"])
    answers = [json.loads(line)["messages"][-1]["content"]
               for line in (Path(row.path) / "train.jsonl").read_text().splitlines()]
    assert answers == ["the corrected one", "fine answer"]

    none = learning_api.post("/api/v1/datasets/from_traces", json={"model": "nobody"})
    assert none.status_code == 400 and "no trace matches" in none.json()["error"]["message"]
    bad_time = learning_api.post("/api/v1/datasets/from_traces", json={"since": "yesterday"})
    assert bad_time.status_code == 400 and "since" in bad_time.json()["error"]["message"]


def test_another_workspace_sees_none_of_it(learning_api, other_key, workspace):
    dataset_id = upload(learning_api, [chat_row(1)]).json()["id"]
    assert learning_api.get(f"/api/v1/datasets/{dataset_id}", key=other_key).status_code == 404
    assert learning_api.delete(f"/api/v1/datasets/{dataset_id}", key=other_key).status_code == 404
    assert learning_api.get("/api/v1/datasets", key=other_key).json()["data"] == []
    assert learning_api.get(f"/api/v1/datasets/{dataset_id}").status_code == 200
    learning_api.plane.store.traces.insert_many([trace(1, workspace.id, at=1.0)])
    theirs = learning_api.post("/api/v1/datasets/from_traces", json={}, key=other_key)
    assert theirs.status_code == 400 and "no trace matches" in theirs.json()["error"]["message"]


def test_without_dataset_files_uploads_answer_503(api):
    response = upload(api, [chat_row(1)])
    assert response.status_code == 503 and "builds no datasets" in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/api/v1/datasets", "/api/v1/datasets/ds-x"])
def test_datasets_need_a_key(learning_api, path):
    assert learning_api.get(path, key=None).status_code == 401
