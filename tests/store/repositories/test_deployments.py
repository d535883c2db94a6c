"""Deployments: numbered per model, visible only in their workspace, updated field by field."""

from __future__ import annotations

import pytest
import sqlalchemy as sa


def test_numbers_count_up_per_model(store, workspace, model, make_deployment):
    first, second = make_deployment(), make_deployment()
    assert (first.number, second.number) == (1, 2)
    assert first.id.startswith("dep-") and len(first.id) == len("dep-") + 8
    other = store.models.ensure(workspace.id, "other", 1.0)
    assert make_deployment(model_id=other.id).number == 1
    assert [d.id for d in store.deployments.list_for_model(model.id)] == [first.id, second.id]


def test_duplicate_number_is_refused(store, model, make_deployment):
    make_deployment()
    with pytest.raises(sa.exc.IntegrityError):
        store.deployments.create(model_id=model.id, number=1, spec={}, package_dir="/x", package_sha256="0" * 64,
                                 desired_replicas=1, now=1.0)


def test_get_hides_other_workspaces(store, workspace, make_deployment):
    deployment = make_deployment()
    other = store.workspaces.create("team-b", 1.0)
    assert store.deployments.get(deployment.id, workspace_id=workspace.id) == deployment
    assert store.deployments.get(deployment.id, workspace_id=other.id) is None
    assert deployment.model_name == "echo" and deployment.workspace_id == workspace.id


def test_update_changes_only_given_fields(store, make_deployment):
    deployment = make_deployment(desired=2)
    updated = store.deployments.update(deployment.id, 20.0, status="failed", status_detail="Traceback: boom",
                                       desired_replicas=0)
    assert (updated.status, updated.status_detail, updated.desired_replicas) == ("failed", "Traceback: boom", 0)
    assert updated.spec == deployment.spec and updated.updated_at == 20.0
    with pytest.raises(ValueError, match="unknown deployment status"):
        store.deployments.update(deployment.id, 21.0, status="exploded")


def test_list_running_is_deploying_and_active_only(store, make_deployment):
    running = {make_deployment(status="deploying").id, make_deployment(status="active").id}
    make_deployment(status="failed")
    make_deployment(status="inactive")
    assert {d.id for d in store.deployments.list_running()} == running
