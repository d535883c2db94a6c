"""Fixtures for backend tests: a slipway home and LocalBackends on it that leave nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from slipway.backends import LocalBackend
from tests.backends.support import assert_no_leftovers, end_everything


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


@pytest.fixture
async def make_backend(home):
    """make_backend(**kwargs) -> LocalBackend on `home`; every replica is ended and checked for leaks after."""
    made: list[LocalBackend] = []

    def make(**kwargs) -> LocalBackend:
        backend = LocalBackend(home, **kwargs)
        made.append(backend)
        return backend

    yield make
    await end_everything(made)
    assert_no_leftovers(home)
