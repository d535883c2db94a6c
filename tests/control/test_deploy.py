"""Deploying a tarball: rows and folder appear together, or (on any error) neither does."""

from __future__ import annotations

import pytest

from slipway.control.config import PackageLimits
from slipway.control.deploy import deploy, package_dir, target_environment
from slipway.errors import SpecError
from slipway.store.repositories.state import StateRepository
from tests.control.conftest import package


def _deploy(store, home, workspace, data=None, **kw):
    kw.setdefault("environment", None)
    kw.setdefault("promote", False)
    return deploy(store, home, workspace.id, data or package(), now=100.0, limits=PackageLimits(), **kw)


def _package_folders(home):
    return sorted(p.relative_to(home).as_posix() for p in (home / "packages").rglob("slipway.yaml"))


def test_valid_package_becomes_deployment_one_in_development(store, home, workspace):
    result = _deploy(store, home, workspace)
    deployment = result.deployment
    assert (deployment.number, deployment.status, deployment.desired_replicas) == (1, "deploying", 1)
    assert deployment.spec["name"] == "echo" and deployment.package_dir == str(
        package_dir(home, workspace.id, "echo", 1))
    assert (home / "packages" / workspace.id / "echo" / "1" / "model.py").is_file()
    assert result.environment.name == "development" and result.environment.deployment_id == deployment.id
    assert _package_folders(home) == [f"packages/{workspace.id}/echo/1/slipway.yaml"]
    assert not list((home / "packages" / ".incoming").iterdir())


def test_second_deploy_is_number_two_and_min_replica_sets_replicas(store, home, workspace):
    _deploy(store, home, workspace)
    second = _deploy(store, home, workspace, package(
        "name: echo\nkind: custom\nautoscaling: {min_replica: 2, max_replica: 3}\n"), promote=True).deployment
    assert second.number == 2 and second.desired_replicas == 2
    model = store.models.get(workspace.id, "echo")
    assert store.environments.get(model.id, "production").deployment_id == second.id


def test_custom_environment_is_created_on_deploy(store, home, workspace):
    result = _deploy(store, home, workspace, environment="staging")
    model = store.models.get(workspace.id, "echo")
    assert store.environments.get(model.id, "staging").deployment_id == result.deployment.id


def test_invalid_package_writes_nothing(store, home, workspace):
    with pytest.raises(SpecError) as info:
        _deploy(store, home, workspace, package("name: Bad_Name\nkind: custom\nreplicas: 3\n"))
    assert len(info.value.problems) == 2
    assert store.models.list() == [] and store.state.version() == 1  # 1: bootstrap
    assert _package_folders(home) == []


def test_failure_inside_the_transaction_leaves_no_rows_and_no_folder(store, home, workspace, monkeypatch):
    def explode(self):
        raise RuntimeError("database went away")

    monkeypatch.setattr(StateRepository, "bump", explode)
    with pytest.raises(RuntimeError, match="went away"):
        _deploy(store, home, workspace)
    monkeypatch.undo()
    assert store.models.list() == [] and store.deployments.list() == []
    assert _package_folders(home) == []
    assert _deploy(store, home, workspace).deployment.number == 1


def test_failure_after_the_folder_moved_removes_it_again(store, home, workspace, monkeypatch):
    import slipway.control.deploy as deploy_module

    real_move = deploy_module._move_into_place

    def move_then_fail(source, final):
        real_move(source, final)
        assert final.is_dir()
        raise OSError("disk full")

    monkeypatch.setattr(deploy_module, "_move_into_place", move_then_fail)
    with pytest.raises(OSError, match="disk full"):
        _deploy(store, home, workspace)
    assert store.deployments.list() == [] and _package_folders(home) == []


def test_environment_and_promote_together_are_refused():
    with pytest.raises(SpecError, match="either an environment or promote"):
        target_environment("staging", True)
    with pytest.raises(SpecError, match="not a valid name"):
        target_environment("Not Valid", False)
    assert target_environment(None, True) == "production"
    assert target_environment(None, False) == "development"
