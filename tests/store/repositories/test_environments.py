"""Environments: serving and pending deployments, history newest first and bounded."""

from __future__ import annotations

from slipway.store.repositories.environments import HISTORY_LIMIT


def test_set_serving_records_history_and_clears_pending(store, model, make_deployment):
    first, second = make_deployment(), make_deployment()
    production = store.environments.get(model.id, "production")
    store.environments.set_serving(production.id, first.id, now=10.0)
    store.environments.set_pending(production.id, second.id, now=11.0)
    assert store.environments.get(model.id, "production").pending_deployment_id == second.id
    assert [e.id for e in store.environments.list_pending()] == [production.id]
    env = store.environments.set_serving(production.id, second.id, now=12.0)
    assert (env.deployment_id, env.pending_deployment_id) == (second.id, None)
    assert [h.deployment_id for h in store.environments.history(production.id)] == [second.id, first.id]
    assert store.environments.list_pending() == []


def test_referencing_finds_serving_and_pending(store, model, make_deployment):
    first, second = make_deployment(), make_deployment()
    production = store.environments.get(model.id, "production")
    development = store.environments.get(model.id, "development")
    store.environments.set_serving(production.id, first.id, now=1.0)
    store.environments.set_pending(development.id, first.id, now=1.0)
    assert [e.name for e in store.environments.referencing(first.id)] == ["production", "development"]
    assert store.environments.referencing(second.id) == []


def test_custom_environment_is_created_once(store, model):
    staging = store.environments.ensure(model.id, "staging", 1.0)
    assert store.environments.ensure(model.id, "staging", 2.0) == staging
    assert [e.name for e in store.environments.list(model.id)] == ["production", "development", "staging"]


def test_history_is_bounded(store, model, make_deployment):
    first, second = make_deployment(), make_deployment()
    production = store.environments.get(model.id, "production")
    for i in range(HISTORY_LIMIT + 5):
        store.environments.set_serving(production.id, (first, second)[i % 2].id, now=float(i))
    history = store.environments.history(production.id, limit=1000)
    assert len(history) == HISTORY_LIMIT
    assert history[0].promoted_at == float(HISTORY_LIMIT + 4)


def test_a_canary_is_set_referenced_listed_and_cleared(store, workspace, model, make_deployment):
    first, second = make_deployment(), make_deployment()
    production = store.environments.get(model.id, "production")
    store.environments.set_serving(production.id, first.id, now=1.0)
    env = store.environments.set_canary(production.id, second.id, 10, now=2.0)
    assert (env.deployment_id, env.canary_deployment_id, env.canary_percent) == (first.id, second.id, 10)
    assert [e.name for e in store.environments.referencing(second.id)] == ["production"]
    assert store.environments.canaries_of_workspace(workspace.id) == {second.id: [("production", 10)]}
    assert store.environments.canaries_of_workspace("ws-other") == {}
    env = store.environments.set_canary(production.id, None, None, now=3.0)
    assert (env.canary_deployment_id, env.canary_percent) == (None, None)
    assert store.environments.referencing(second.id) == []
    assert [h.deployment_id for h in store.environments.history(production.id)] == [first.id]
