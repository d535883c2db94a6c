"""Promotion rules on the store: immediate or pending, rollback targets, refusals."""

from __future__ import annotations

import pytest

from slipway.control import promotion
from slipway.errors import ConflictError, NotFoundError
from tests.control.conftest import package


@pytest.fixture
def echo(plane, workspace):
    """(model, [deployment 1, 2, 3]) with #1 active and serving production."""
    first = plane.deploy(workspace.id, package(), promote=True).deployment
    plane.store.deployments.update(first.id, 1.0, status="active")
    rest = [plane.deploy(workspace.id, package(), environment="staging").deployment for _ in range(2)]
    return plane.store.models.get(workspace.id, "echo"), [plane.store.deployments.get(first.id), *rest]


def test_promoting_a_deploying_deployment_over_an_active_one_waits(plane, echo):
    model, (first, second, _) = echo
    with plane.store.transaction() as tx:
        env = promotion.promote(tx, model, "production", tx.deployments.get(second.id), 2.0)
    assert (env.deployment_id, env.pending_deployment_id) == (first.id, second.id)


def test_promoting_an_active_deployment_switches_at_once_and_retires_the_old(plane, echo):
    model, (first, second, _) = echo
    plane.store.deployments.update(second.id, 2.0, status="active")
    plane.store.environments.set_serving(plane.store.environments.get(model.id, "staging").id, first.id, 2.0)
    with plane.store.transaction() as tx:
        env = promotion.promote(tx, model, "production", tx.deployments.get(second.id), 3.0)
    assert env.deployment_id == second.id
    # staging still points at #1, so it stays active
    assert plane.store.deployments.get(first.id).status == "active"


def test_newer_pending_promotion_replaces_and_retires_the_older_pending(plane, echo):
    model, (first, second, third) = echo
    staging = plane.store.environments.get(model.id, "staging")
    plane.store.environments.set_serving(staging.id, first.id, 2.0)  # #2 and #3 now only pending candidates
    with plane.store.transaction() as tx:
        promotion.promote(tx, model, "production", tx.deployments.get(second.id), 3.0)
        env = promotion.promote(tx, model, "production", tx.deployments.get(third.id), 4.0)
    assert env.pending_deployment_id == third.id
    assert plane.store.deployments.get(second.id).status == "inactive"


def test_rollback_while_pending_calls_the_promotion_off(plane, echo):
    model, (first, second, _) = echo
    with plane.store.transaction() as tx:
        promotion.promote(tx, model, "production", tx.deployments.get(second.id), 2.0)
        env, target = promotion.rollback(tx, model, "production", 3.0)
    assert (env.deployment_id, env.pending_deployment_id, target) == (first.id, None, first.id)


def test_rollback_without_history_is_a_conflict(plane, echo):
    model, _ = echo
    with pytest.raises(ConflictError, match="no earlier deployment"):
        with plane.store.transaction() as tx:
            promotion.rollback(tx, model, "production", 2.0)


def test_rollback_skips_failed_deployments(plane, echo):
    model, (first, second, third) = echo
    production = plane.store.environments.get(model.id, "production")
    for deployment, at in ((second, 2.0), (third, 3.0)):
        plane.store.environments.set_serving(production.id, deployment.id, at)
    plane.store.deployments.update(second.id, 4.0, status="failed", status_detail="boom")
    with plane.store.transaction() as tx:
        _, target = promotion.rollback(tx, model, "production", 5.0)
    assert target == first.id


def test_failed_deployment_cannot_be_promoted(plane, echo):
    model, (_, second, _) = echo
    plane.store.deployments.update(second.id, 2.0, status="failed", status_detail="Traceback\nValueError: bad")
    with pytest.raises(ConflictError, match="ValueError: bad"):
        with plane.store.transaction() as tx:
            promotion.promote(tx, model, "production", tx.deployments.get(second.id), 3.0)


def test_inactive_deployment_comes_back_when_promoted(plane, echo):
    model, (_, second, _) = echo
    plane.store.deployments.update(second.id, 2.0, status="inactive", desired_replicas=0)
    with plane.store.transaction() as tx:
        promotion.promote(tx, model, "production", tx.deployments.get(second.id), 3.0)
    back = plane.store.deployments.get(second.id)
    assert (back.status, back.desired_replicas) == ("deploying", 1)


def test_unknown_environment_is_not_found(plane, echo):
    model, (_, second, _) = echo
    with pytest.raises(NotFoundError, match="no environment 'qa'"):
        with plane.store.transaction() as tx:
            promotion.promote(tx, model, "qa", tx.deployments.get(second.id), 3.0)
