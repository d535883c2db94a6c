"""The fleet as Prometheus gauges: read at scrape time from the store and the last observation.

    figures = read_fleet(store, replicas, autoscaled)   deployments by status, each running one's replicas
    metrics.set_fleet(*figures); metrics.render()       the body of the control plane's GET /metrics

Replica states come from the reconciler's last observation (what the backend reports), the
desired counts and environments from the store. The page carries names and counts only: no key,
hash or URL, since it is served without authentication.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

from slipway.observe.metrics import DeploymentFigures
from slipway.spec.replica import ReplicaObservation
from slipway.store import RUNNING_STATUSES, Store

# Replica states counted under their own name on slipway_control_replicas.
_COUNTED_STATES = ("ready", "starting", "draining", "crashed", "failed")


def read_fleet(store: Store, replicas: Sequence[ReplicaObservation],
               autoscaled_desired: Callable[[str, int], int | None]
               ) -> tuple[list[tuple[str, str, int]], list[DeploymentFigures]]:
    """(model, status, count) per model and status, and the figures of every running deployment.

    `autoscaled_desired(deployment_id, desired)` returns the count to show as the autoscaler's, or
    None when the autoscaler does not decide that deployment's size.
    """
    with store.transaction() as tx:
        deployments = tx.deployments.list()
        environments = tx.environments.list()
    by_status = Counter((d.model_name, d.status) for d in deployments)
    serving: dict[str, list[str]] = {}
    for environment in environments:
        if environment.deployment_id:
            serving.setdefault(environment.deployment_id, []).append(environment.name)
    states: dict[str, Counter] = {}
    for replica in replicas:
        states.setdefault(replica.deployment_id, Counter())[replica.state.value] += 1
    running = []
    for deployment in deployments:
        if deployment.status not in RUNNING_STATUSES:
            continue
        counts = states.get(deployment.id, Counter())
        running.append(DeploymentFigures(
            model=deployment.model_name,
            environment=",".join(sorted(serving.get(deployment.id, []))),
            deployment=deployment.id,
            replicas={"desired": deployment.desired_replicas, **{s: counts.get(s, 0) for s in _COUNTED_STATES}},
            autoscaler_desired=autoscaled_desired(deployment.id, deployment.desired_replicas),
        ))
    return [(model, status, n) for (model, status), n in sorted(by_status.items())], running
