"""Helpers for runtime tests: write a package folder from text."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from slipway.spec.package import PackageSpec, parse_package


@pytest.fixture
def make_package(tmp_path):
    """make_package(model_py, yaml=...) -> (spec, folder): a package folder under tmp_path."""
    counter = 0

    def make(model_py: str | None = None, yaml: str = "name: test-model\nkind: custom\n") -> tuple[PackageSpec, Path]:
        nonlocal counter
        counter += 1
        folder = tmp_path / f"package-{counter}"
        folder.mkdir()
        (folder / "slipway.yaml").write_text(yaml)
        if model_py is not None:
            (folder / "model.py").write_text(textwrap.dedent(model_py))
        return parse_package(yaml), folder

    return make
