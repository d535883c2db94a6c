"""`slipway promote --canary` and completing it, against a real control app on 127.0.0.1.

The CLI runs as a subprocess (`python -m slipway ...`); the control plane's replicas are the
scripted stand-ins of tests/control/conftest.py, so no process is started for a deployment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from slipway.control import ControlPlane, create_control_app
from slipway.store import Store
from tests.cli.test_main import run
from tests.control.conftest import LogBackend, ScriptedReconciler, package
from tests.control.routes.learning import ServerThread


class World:
    """echo #1 serving production and #2 in development, both active, served over HTTP."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.store = Store.open(None, home)
        self.plane = ControlPlane(self.store, LogBackend(), home=home, reconciler=ScriptedReconciler())
        self.workspace, self.admin_key = self.plane.bootstrap()
        self.first = self.plane.deploy(self.workspace.id, package(), promote=True).deployment
        self.second = self.plane.deploy(self.workspace.id, package()).deployment
        for deployment in (self.first, self.second):
            self.store.deployments.update(deployment.id, 1.0, status="active")
        self.server = ServerThread(create_control_app(self.plane))

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "SLIPWAY_URL": self.server.url, "SLIPWAY_API_KEY": self.admin_key,
               "SLIPWAY_HOME": str(self.home), "COLUMNS": "200"}
        return subprocess.run([sys.executable, "-m", "slipway", *args], capture_output=True, text=True, env=env,
                              timeout=60)

    def production(self):
        model = self.store.models.get(self.workspace.id, "echo")
        return self.store.environments.get(model.id, "production")


@pytest.fixture
def world(tmp_path):
    world = World(tmp_path / "home")
    with world.server:
        yield world
    world.store.close()


def test_a_canary_is_started_by_number_and_completed_by_promoting_it_again(world):
    started = world.cli("promote", "echo", "--deployment", "2", "--canary", "10")
    assert started.returncode == 0, started.stderr
    said = " ".join(started.stdout.split())
    assert f"Canary echo production: 10% of requests -> {world.second.id}, the rest -> {world.first.id}" in said
    environment = world.production()
    assert (environment.deployment_id, environment.canary_deployment_id, environment.canary_percent) == (
        world.first.id, world.second.id, 10)

    completed = world.cli("promote", "echo", "--deployment", world.second.id)
    assert completed.returncode == 0, completed.stderr
    assert f"Promoted echo production -> {world.second.id}" in completed.stdout
    environment = world.production()
    assert (environment.deployment_id, environment.canary_deployment_id) == (world.second.id, None)


def test_rollback_ends_a_canary(world):
    world.cli("promote", "echo", "--deployment", "2", "--canary", "30")
    rolled_back = world.cli("rollback", "echo")
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert world.production().canary_deployment_id is None


def test_the_canary_share_is_checked_before_anything_reaches_the_server(tmp_path):
    result = run("promote", "echo", "--deployment", "2", "--canary", "100", env_home=tmp_path,
                 SLIPWAY_API_KEY="sk-slw-x", SLIPWAY_URL="http://127.0.0.1:9")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error:")
    assert "--canary must be a percent between 1 and 99, got 100" in " ".join(result.stderr.split())
