"""Replica rows follow the backend's reports; gone replicas stay (bounded) for their logs."""

from __future__ import annotations

from slipway.spec.replica import ReplicaObservation, ReplicaState
from slipway.store.repositories.replicas import GONE_REPLICAS_KEPT


def _obs(replica_id, deployment_id, state=ReplicaState.STARTING, **fields):
    return ReplicaObservation(replica_id=replica_id, deployment_id=deployment_id, state=state, **fields)


def test_sync_inserts_updates_and_reports_change(store, make_deployment):
    deployment = make_deployment()
    assert store.replicas.sync([_obs("r-1", deployment.id, started_at=5.0)], now=5.0) is True
    assert store.replicas.sync([_obs("r-1", deployment.id, started_at=5.0)], now=6.0) is False
    ready = _obs("r-1", deployment.id, ReplicaState.READY, url="http://127.0.0.1:9000", pid=42, started_at=5.0)
    assert store.replicas.sync([ready], now=7.0) is True
    [row] = store.replicas.list(deployment.id)
    assert (row.state, row.url, row.pid, row.updated_at) == ("ready", "http://127.0.0.1:9000", 42, 7.0)
    assert [r.id for r in store.replicas.list_live()] == ["r-1"]


def test_restart_of_same_replica_counts(store, make_deployment):
    deployment = make_deployment()
    store.replicas.sync([_obs("r-1", deployment.id, ReplicaState.CRASHED, started_at=5.0, exit_code=-9)], now=6.0)
    store.replicas.sync([_obs("r-1", deployment.id, started_at=8.0)], now=8.0)
    assert store.replicas.list(deployment.id)[0].restarts == 1


def test_vanished_replicas_become_stopped_but_failed_ones_stay_failed(store, make_deployment):
    deployment = make_deployment()
    store.replicas.sync([
        _obs("r-live", deployment.id, ReplicaState.READY, started_at=1.0),
        _obs("r-failed", deployment.id, ReplicaState.FAILED, started_at=2.0, detail="Traceback: boom"),
    ], now=3.0)
    assert store.replicas.sync([], now=4.0) is True
    assert [(r.id, r.state) for r in store.replicas.list(deployment.id)] == [("r-failed", "failed")]
    everything = store.replicas.list(deployment.id, include_stopped=True)
    assert {(r.id, r.state) for r in everything} == {("r-failed", "failed"), ("r-live", "stopped")}
    assert store.replicas.list_live() == []


def test_failed_replica_reported_stopped_stays_failed(store, make_deployment):
    deployment = make_deployment()
    store.replicas.sync([_obs("r-1", deployment.id, ReplicaState.FAILED, detail="Traceback: boom")], now=1.0)
    store.replicas.sync([_obs("r-1", deployment.id, ReplicaState.STOPPED)], now=2.0)
    [row] = store.replicas.list(deployment.id)
    assert (row.state, row.detail) == ("failed", "Traceback: boom")


def test_unknown_deployment_is_skipped(store):
    assert store.replicas.sync([_obs("r-x", "dep-missing")], now=1.0) is False


def test_gone_replicas_are_pruned_to_the_newest(store, make_deployment):
    deployment = make_deployment()
    for i in range(GONE_REPLICAS_KEPT + 5):
        store.replicas.sync([_obs(f"r-{i:03d}", deployment.id, started_at=float(i))], now=float(i))
    store.replicas.sync([], now=1000.0)
    kept = store.replicas.list(deployment.id, include_stopped=True)
    assert len(kept) == GONE_REPLICAS_KEPT


def test_list_for_deployments_holds_every_state_of_the_given_deployments(store, make_deployment):
    first, second, other = make_deployment(), make_deployment(), make_deployment()
    store.replicas.sync([
        _obs("r-a", first.id, ReplicaState.READY, started_at=2.0),
        _obs("r-b", first.id, ReplicaState.FAILED, started_at=1.0, detail="boom"),
        _obs("r-c", second.id, ReplicaState.READY, started_at=3.0),
        _obs("r-d", other.id, ReplicaState.READY, started_at=3.0),
    ], now=4.0)
    store.replicas.sync([_obs("r-b", first.id, ReplicaState.FAILED, started_at=1.0, detail="boom"),
                         _obs("r-d", other.id, ReplicaState.READY, started_at=3.0)], now=5.0)
    rows = store.replicas.list_for_deployments([first.id, second.id])
    expected = sorted([(first.id, "r-b", "failed"), (first.id, "r-a", "stopped"), (second.id, "r-c", "stopped")])
    assert sorted((r.deployment_id, r.id, r.state) for r in rows) == expected
    assert [r.id for r in rows if r.deployment_id == first.id] == ["r-b", "r-a"]  # by start
    assert store.replicas.list_for_deployments([]) == []
