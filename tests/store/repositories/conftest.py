"""Small builders shared by the repository tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def workspace(store):
    return store.workspaces.create("team-a", 1.0)


@pytest.fixture
def model(store, workspace):
    return store.models.ensure(workspace.id, "echo", 1.0)


@pytest.fixture
def make_deployment(store, model):
    def make(status: str = "deploying", desired: int = 1, now: float = 10.0, model_id: str | None = None):
        target = model_id or model.id
        return store.deployments.create(
            model_id=target, number=store.deployments.next_number(target), spec={"name": "echo", "kind": "custom"},
            package_dir="/packages/echo", package_sha256="ab" * 32, desired_replicas=desired, now=now, status=status,
        )

    return make
