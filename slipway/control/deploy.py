"""Deploying: an uploaded package becomes a numbered, immutable deployment of its model.

    upload ─► unpack + validate (packages.py) ─► one transaction:
                 model (created on first deploy) ─► deployment #n ─► environment placement
                 ─► move the folder to packages/<workspace>/<model>/<n>/ ─► commit

The folder is moved into place as the last step inside the transaction and removed again if the
commit fails, so an error at any step leaves neither rows nor a folder.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from slipway.control.config import PackageLimits
from slipway.control.packages import unpack_package
from slipway.control.promotion import initial_replicas, place
from slipway.errors import ConflictError, SpecError
from slipway.spec.package import NAME_PATTERN
from slipway.store import DeploymentRow, EnvironmentRow, Store

log = logging.getLogger(__name__)

PACKAGES_DIR = "packages"
_STAGING_DIR = ".incoming"
# Two uploads of one model at the same moment race for the next number; the loser tries again.
_NUMBER_ATTEMPTS = 5


@dataclass(frozen=True)
class DeployResult:
    deployment: DeploymentRow
    environment: EnvironmentRow


def target_environment(environment: str | None, promote: bool) -> str:
    """The environment a new deployment goes to: --env NAME, production with --promote, else development."""
    if environment and promote:
        raise SpecError("pass either an environment or promote (which means production), not both",
                        code="invalid_request")
    name = environment or ("production" if promote else "development")
    if not re.match(NAME_PATTERN, name):
        raise SpecError(f"environment {name!r} is not a valid name; use lowercase letters, digits and dashes",
                        code="invalid_request")
    return name


def package_dir(home: Path, workspace_id: str, model_name: str, number: int) -> Path:
    return Path(home) / PACKAGES_DIR / workspace_id / model_name / str(number)


def deploy(store: Store, home: Path, workspace_id: str, package: bytes, *, environment: str | None,
           promote: bool, now: float, limits: PackageLimits) -> DeployResult:
    """Validate and store `package` as the next deployment of its model, placed in its environment."""
    environment_name = target_environment(environment, promote)
    staging = Path(home) / PACKAGES_DIR / _STAGING_DIR
    unpacked = unpack_package(package, staging, limits)
    try:
        for _ in range(_NUMBER_ATTEMPTS):
            try:
                return _record(store, home, workspace_id, unpacked.root, unpacked.spec.model_dump(mode="json"),
                               unpacked.spec.name, unpacked.sha256, environment_name, now)
            except IntegrityError:
                log.info("deployment number of %s taken by a concurrent deploy; trying the next", unpacked.spec.name)
        raise ConflictError(f"could not number a new deployment of {unpacked.spec.name!r}: too many concurrent "
                            "deploys of it; try again")
    finally:
        shutil.rmtree(unpacked.workdir, ignore_errors=True)


def _record(store: Store, home: Path, workspace_id: str, root: Path, spec: dict, model_name: str,
            sha256: str, environment_name: str, now: float) -> DeployResult:
    moved_to: Path | None = None
    try:
        with store.transaction() as tx:
            model = tx.models.ensure(workspace_id, model_name, now)
            number = tx.deployments.next_number(model.id)
            final = package_dir(home, workspace_id, model_name, number)
            deployment = tx.deployments.create(
                model_id=model.id, number=number, spec=spec, package_dir=str(final), package_sha256=sha256,
                desired_replicas=initial_replicas(spec), now=now,
            )
            environment = place(tx, tx.environments.ensure(model.id, environment_name, now), deployment, now)
            tx.state.bump()
            moved_to = final  # from here on, a failure (even of the commit) must undo the move
            _move_into_place(root, final)
            return DeployResult(deployment=deployment, environment=environment)
    except BaseException:
        if moved_to is not None:
            _move_back(moved_to, root)
        raise


def _move_into_place(source: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        # Left by a deploy that crashed between moving and committing: no row names it.
        log.warning("removing orphaned package folder %s", final)
        shutil.rmtree(final)
    os.replace(source, final)


def _move_back(final: Path, source: Path) -> None:
    """Undo `_move_into_place` after a failure, so a retry can use the folder again."""
    if not final.exists():
        return
    if not source.exists():
        try:
            os.replace(final, source)
            return
        except OSError:
            pass
    shutil.rmtree(final, ignore_errors=True)
