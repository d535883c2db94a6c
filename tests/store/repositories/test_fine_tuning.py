"""Fine-tuning jobs: OpenAI statuses as compare-and-set transitions, events and checkpoints copied idempotently."""

from __future__ import annotations

import pytest

from slipway.store import CheckpointRecord, EventRecord

HYPER = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 1.0, "lora_rank": 8}


@pytest.fixture
def other_workspace(store):
    return store.workspaces.create("team-b", 1.0)


@pytest.fixture
def job(store, workspace):
    return store.fine_tuning.create_job(workspace.id, model="smollm2", training_file="ds-1", hyperparameters=HYPER,
                                        seed=7, now=10.0, suffix="support")


def test_created_job_has_openai_fields(store, workspace, job):
    assert job.id.startswith("ftjob-") and len(job.id) == len("ftjob-") + 24
    assert (job.status, job.model, job.training_file, job.validation_file, job.seed) == (
        "validating_files", "smollm2", "ds-1", None, 7)
    assert job.hyperparameters == HYPER and job.finished_at is None and not job.finished
    assert store.fine_tuning.get_job(workspace.id, job.id) == job


def test_transitions_stamp_times_and_refuse_finished_jobs(store, job):
    fine = store.fine_tuning
    assert fine.transition(job.id, "queued", 11.0).status == "queued"
    running = fine.transition(job.id, "running", 12.0, pid=4242)
    assert (running.status, running.started_at, running.pid) == ("running", 12.0, 4242)
    # Restarting a running job's process keeps the first start time.
    assert fine.transition(job.id, "running", 20.0, expected=["running"]).started_at == 12.0
    done = fine.transition(job.id, "succeeded", 30.0, fine_tuned_model="ft:smollm2:support:abc",
                           trained_tokens=1234)
    assert (done.status, done.finished_at, done.pid, done.trained_tokens) == ("succeeded", 30.0, None, 1234)
    assert done.finished
    assert fine.transition(job.id, "cancelled", 31.0) is None
    assert fine.transition("ftjob-missing", "queued", 31.0) is None
    with pytest.raises(ValueError, match="never changes status"):
        fine.transition(job.id, "failed", 32.0, expected=["succeeded"])
    with pytest.raises(ValueError, match="unknown fine-tuning job status"):
        fine.transition(job.id, "paused", 32.0)


def test_cancel_races_finish_with_one_winner(store, job):
    store.fine_tuning.transition(job.id, "running", 11.0)
    assert store.fine_tuning.transition(job.id, "cancelled", 12.0) is not None
    assert store.fine_tuning.transition(job.id, "failed", 12.5, error={"code": "x", "message": "m"}) is None


def test_list_newest_first_pages_and_filters(store, workspace):
    ids = [store.fine_tuning.create_job(workspace.id, model="m", training_file="ds", hyperparameters={}, seed=0,
                                        now=float(t)).id for t in range(5)]
    store.fine_tuning.transition(ids[1], "failed", 9.0)
    page = store.fine_tuning.list_jobs(workspace.id, limit=3)
    assert [j.id for j in page] == ids[::-1][:3]
    assert [j.id for j in store.fine_tuning.list_jobs(workspace.id, limit=3, after=page[-1].id)] == ids[1::-1]
    assert [j.id for j in store.fine_tuning.list_jobs(workspace.id, statuses=["failed"])] == [ids[1]]
    assert [j.id for j in store.fine_tuning.list_unfinished()] == [ids[0], *ids[2:]]


def test_update_job_changes_only_given_fields(store, job):
    row = store.fine_tuning.update_job(job.id, job_dir="/jobs/x", pid=99)
    assert (row.job_dir, row.pid, row.hyperparameters) == ("/jobs/x", 99, HYPER)
    assert store.fine_tuning.update_job(job.id, pid=None).pid is None
    assert store.fine_tuning.update_job("ftjob-missing", pid=1) is None


def test_events_are_copied_once_and_listed_like_openai(store, workspace, job):
    events = [EventRecord(seq=i, level="info", message=f"step {i}", created_at=20.0 + i, type="metrics",
                          data={"step": i, "loss": 1.0 / (i + 1)}) for i in range(5)]
    assert store.fine_tuning.add_events(job.id, events[:3]) == 3
    assert store.fine_tuning.add_events(job.id, events) == 2
    assert store.fine_tuning.last_event_seq(job.id) == 4
    newest = store.fine_tuning.list_events(workspace.id, job.id, limit=2)
    assert [e.seq for e in newest] == [4, 3] and newest[0].data == {"step": 4, "loss": 0.2}
    assert newest[0].id.startswith("ftevent-")
    assert [e.seq for e in store.fine_tuning.list_events(workspace.id, job.id, after=newest[-1].id)] == [2, 1, 0]
    assert [e.seq for e in store.fine_tuning.events_since(workspace.id, job.id, 2)] == [3, 4]
    with pytest.raises(ValueError, match="unknown event level"):
        store.fine_tuning.add_events(job.id, [EventRecord(seq=9, level="loud", message="x", created_at=1.0)])


def test_checkpoints_follow_the_folder(store, workspace, job):
    def found(*steps):
        return [CheckpointRecord(step=s, metrics={"step": s, "train_loss": 1.0}, path=f"/j/step-{s}",
                                 created_at=float(s)) for s in steps]

    assert store.fine_tuning.sync_checkpoints(job.id, found(2, 4)) is True
    first_ids = {c.step: c.id for c in store.fine_tuning.list_checkpoints(workspace.id, job.id)}
    assert store.fine_tuning.sync_checkpoints(job.id, found(2, 4)) is False
    assert store.fine_tuning.sync_checkpoints(job.id, found(4, 6)) is True
    rows = store.fine_tuning.list_checkpoints(workspace.id, job.id)
    assert [c.step for c in rows] == [6, 4]
    assert rows[1].id == first_ids[4] and rows[0].id.startswith("ftckpt-")
    assert store.fine_tuning.get_checkpoint(workspace.id, rows[0].id).path == "/j/step-6"


def test_a_workspace_never_sees_another_workspaces_jobs(store, job, other_workspace):
    store.fine_tuning.add_events(job.id, [EventRecord(seq=0, level="info", message="m", created_at=1.0)])
    store.fine_tuning.sync_checkpoints(job.id, [CheckpointRecord(step=1, metrics={}, path="/p", created_at=1.0)])
    [checkpoint] = store.fine_tuning.list_checkpoints(job.workspace_id, job.id)
    assert store.fine_tuning.get_job(other_workspace.id, job.id) is None
    assert store.fine_tuning.list_jobs(other_workspace.id) == []
    assert store.fine_tuning.list_events(other_workspace.id, job.id) == []
    assert store.fine_tuning.events_since(other_workspace.id, job.id) == []
    assert store.fine_tuning.list_checkpoints(other_workspace.id, job.id) == []
    assert store.fine_tuning.get_checkpoint(other_workspace.id, checkpoint.id) is None


def test_deleting_a_workspace_deletes_its_jobs(store, workspace, job):
    store.fine_tuning.add_events(job.id, [EventRecord(seq=0, level="info", message="m", created_at=1.0)])
    import sqlalchemy as sa

    from slipway.store.tables import fine_tuning_events, workspaces
    with store.engine.begin() as conn:
        conn.execute(sa.delete(workspaces).where(workspaces.c.id == workspace.id))
        assert conn.execute(sa.select(sa.func.count()).select_from(fine_tuning_events)).scalar() == 0
    assert store.fine_tuning.list_unfinished() == []
