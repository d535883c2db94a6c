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


def test_list_for_workspace_is_by_model_then_number_and_hides_other_workspaces(store, workspace, model,
                                                                                make_deployment):
    alpha = store.models.ensure(workspace.id, "alpha", 1.0)
    first, second = make_deployment(), make_deployment()
    third = make_deployment(model_id=alpha.id)
    other_workspace = store.workspaces.create("team-b", 1.0)
    make_deployment(model_id=store.models.ensure(other_workspace.id, "hidden", 1.0).id)
    assert [d.id for d in store.deployments.list_for_workspace(workspace.id)] == [third.id, first.id, second.id]
    assert store.deployments.list_for_workspace("ws-nobody") == []


def test_environments_of_workspace_names_serving_and_pending(store, workspace, model, make_deployment):
    serving, waiting = make_deployment(), make_deployment()
    production = store.environments.ensure(model.id, "production", 1.0)
    development = store.environments.ensure(model.id, "development", 1.0)
    store.environments.ensure(model.id, "staging", 1.0)  # points at nothing: left out
    store.environments.set_serving(production.id, serving.id, 2.0)
    store.environments.set_pending(production.id, waiting.id, 3.0)
    store.environments.set_serving(development.id, waiting.id, 3.0)
    assert store.deployments.environments_of_workspace(workspace.id) == {
        serving.id: [("production", False)], waiting.id: [("production", True), ("development", False)]}
    assert store.deployments.environments_of_workspace("ws-nobody") == {}


def test_pricing_is_set_replaced_and_removed_as_sql_null(store, make_deployment):
    priced, plain = make_deployment(), make_deployment()
    assert store.deployments.pricing([priced.id, plain.id]) == {}
    assert store.deployments.set_pricing(priced.id, {"per_request": 0.5, "per_1k_prompt_tokens": 0.01}, 30.0)
    assert store.deployments.pricing([priced.id, plain.id]) == {
        priced.id: {"per_request": 0.5, "per_1k_prompt_tokens": 0.01}}
    assert store.deployments.get(priced.id).updated_at == 30.0
    store.deployments.set_pricing(priced.id, None, 31.0)
    assert store.deployments.pricing([priced.id]) == {}
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM deployments WHERE pricing IS NULL")).scalar() == 2
    assert store.deployments.set_pricing("dep-missing", {"per_request": 1.0}, 32.0) is False
    assert store.deployments.pricing([]) == {}
