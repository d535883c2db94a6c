"""The routing snapshot: built from the store, published to gateways, long-polled by version.

`build_snapshot(store)` reads everything a gateway needs in one transaction: active keys,
models with the deployment serving each environment (and its canary, if any), the deployments
that can serve, and their live replicas. `SnapshotPublisher` holds the newest one and implements
the gateway's `SnapshotSource` protocol in process:

    current() -> RoutingSnapshot
    await wait_newer(after_version, timeout) -> RoutingSnapshot   # at once if newer exists

It is thread-safe: `publish` may be called from worker threads while readers wait on event loops.
"""

from __future__ import annotations

from pathlib import Path

from slipway.spec.fine_tuning import ADAPTER_DIR, checkpoint_model_name
from slipway.spec.replica import ReplicaState
from slipway.spec.snapshot import (
    AdapterEntry, CanaryEntry, DeploymentEntry, KeyEntry, ModelEntry, ReplicaEntry, RoutingSnapshot, SnapshotBoard,
)
from slipway.store import RUNNING_STATUSES, Store


def build_snapshot(store: Store) -> RoutingSnapshot:
    """The routing snapshot as the store has it now, versioned by the store's state version."""
    with store.transaction() as tx:
        version = tx.state.version()
        keys = tx.keys.list_active()
        models = tx.models.list()
        environments = tx.environments.list()
        referenced = {e.deployment_id for e in environments if e.deployment_id}
        deployments = {d.id: d for d in tx.deployments.list(statuses=RUNNING_STATUSES)}
        missing = referenced - deployments.keys()
        if missing:
            deployments.update({d.id: d for d in tx.deployments.list(ids=sorted(missing))})
        replicas = tx.replicas.list_live()
        fine_tuned = tx.fine_tuning.list_fine_tuned()
        checkpoints = tx.fine_tuning.checkpoints_of_fine_tuned()

    environments_by_model: dict[str, dict[str, str]] = {}
    captured_by_model: dict[str, list[str]] = {}
    canaries_by_model: dict[str, dict[str, CanaryEntry]] = {}
    for environment in environments:
        if environment.capture:
            captured_by_model.setdefault(environment.model_id, []).append(environment.name)
        if environment.deployment_id:
            environments_by_model.setdefault(environment.model_id, {})[environment.name] = environment.deployment_id
        if environment.canary_deployment_id and 1 <= (environment.canary_percent or 0) <= 99:
            canaries_by_model.setdefault(environment.model_id, {})[environment.name] = CanaryEntry(
                deployment_id=environment.canary_deployment_id, percent=environment.canary_percent)
    adapters = {(job.workspace_id, job.fine_tuned_model): AdapterEntry(base_model=job.model,
                                                                       path=str(Path(job.job_dir) / ADAPTER_DIR))
                for job in fine_tuned if job.job_dir and job.fine_tuned_model}
    # A job's kept checkpoints are callable too (`<fine-tuned model>:ckpt-step-N`), so an eval can
    # compare them through the gateway; they are no rows of the models table.
    jobs = {job.id: job for job in fine_tuned}
    checkpoint_models = []
    for checkpoint in checkpoints:
        job = jobs.get(checkpoint.job_id)
        if job is None or not job.fine_tuned_model:
            continue
        name = checkpoint_model_name(job.fine_tuned_model, checkpoint.step)
        checkpoint_models.append(ModelEntry(workspace_id=job.workspace_id, name=name, adapter=AdapterEntry(
            base_model=job.model, path=str(Path(checkpoint.path) / ADAPTER_DIR))))
    replicas_by_deployment: dict[str, list[ReplicaEntry]] = {}
    for replica in replicas:
        if replica.url:
            replicas_by_deployment.setdefault(replica.deployment_id, []).append(
                ReplicaEntry(replica_id=replica.id, url=replica.url, ready=replica.state == ReplicaState.READY.value))
    return RoutingSnapshot(
        version=version,
        keys=[KeyEntry(key_id=k.id, key_hash=k.key_hash, workspace_id=k.workspace_id, scopes=list(k.scopes),
                       models=list(k.models) if k.models is not None else None) for k in keys],
        models=[ModelEntry(workspace_id=m.workspace_id, name=m.name, environments=environments_by_model.get(m.id, {}),
                           capture_environments=captured_by_model.get(m.id, []),
                           canaries=canaries_by_model.get(m.id, {}),
                           adapter=adapters.get((m.workspace_id, m.name)))
                for m in models] + checkpoint_models,
        deployments=[
            DeploymentEntry(
                deployment_id=d.id, workspace_id=d.workspace_id, model_name=d.model_name, number=d.number,
                kind=str(d.spec.get("kind", "custom")),
                status=d.status, routing=d.spec.get("routing", "least_load"), capture=bool(d.spec.get("capture")),
                replicas=replicas_by_deployment.get(d.id, []),
            )
            for d in deployments.values()
        ],
    )


class SnapshotPublisher(SnapshotBoard):
    """The control plane's newest snapshot; `publish` ignores a version that is not newer."""
