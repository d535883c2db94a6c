"""The package import rules of docs/architecture.md, enforced over the source tree.

Each top-level package under `slipway/` may import only the packages listed for it. Imports
inside `if TYPE_CHECKING:` blocks count too: a rule is about what a package knows of, not only
what it loads.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "slipway"

# Shared leaf modules every package may use.
COMMON = {"errors"}

ALLOWED: dict[str, set[str]] = {
    "spec": set(),
    "observe": {"spec"},
    "routing": {"spec"},
    "autoscaling": {"spec"},
    "placement": {"spec"},
    "engine": {"spec", "observe"},
    "runtimes": {"engine", "spec", "observe"},
    "server": {"runtimes", "spec", "observe"},
    "store": {"spec", "observe"},
    "backends": {"spec", "observe"},
    "gateway": {"routing", "store", "spec", "observe"},
    "control": {"autoscaling", "placement", "backends", "store", "spec", "observe"},
    "train": {"spec", "store", "observe"},
    "evals": {"spec", "store", "observe"},
    "sim": {"routing", "autoscaling", "placement", "spec"},
}
# Composition roots: may import anything public, but nothing imports them.
ROOTS = {"web", "cli", "client", "app", "bench"}
NEVER_IMPORTED = {"cli", "sim"}
PURE = {"routing", "autoscaling", "placement"}
IMPURE_MODULES = {"asyncio", "socket", "subprocess", "time", "threading", "httpx", "aiohttp", "requests"}


def _top_package(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py") if rel.parts else ""


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            # Relative imports stay inside their own package by convention; resolve to check.
            parts = path.relative_to(ROOT).with_suffix("").parts[: -node.level]
            module = ".".join(("slipway", *parts, *(node.module or "").split("."))).rstrip(".")
            found.append((node.lineno, module))
    return found


def _violations() -> list[str]:
    problems = []
    for path in sorted(ROOT.rglob("*.py")):
        package = _top_package(path)
        if package in ("__init__", "__main__", "errors"):
            continue
        for line, module in _imports(path):
            where = f"{path.relative_to(ROOT.parent)}:{line}"
            if package in PURE and module.split(".")[0] in IMPURE_MODULES:
                problems.append(f"{where}: {package} is pure and may not import {module}")
            if not module.startswith("slipway.") and module != "slipway":
                continue
            target = module.split(".")[1] if "." in module else ""
            if target in ("", package) or target in COMMON:
                continue
            if target in NEVER_IMPORTED:
                problems.append(f"{where}: nothing may import slipway.{target}")
            elif package in ROOTS:
                continue
            elif package not in ALLOWED:
                problems.append(f"{where}: package {package} has no import rule; add it to docs/architecture.md and this test")
            elif target not in ALLOWED[package]:
                problems.append(f"{where}: {package} may not import slipway.{target}")
    return problems


def test_import_rules_hold():
    problems = _violations()
    assert not problems, "import rules broken:\n" + "\n".join(problems)


def test_checker_catches_a_violation(tmp_path, monkeypatch):
    fake = tmp_path / "slipway"
    (fake / "routing").mkdir(parents=True)
    (fake / "routing" / "bad.py").write_text("import asyncio\nfrom slipway.store import x\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", fake)
    problems = _violations()
    assert any("pure and may not import asyncio" in p for p in problems)
    assert any("routing may not import slipway.store" in p for p in problems)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_every_package_exists(package):
    assert (ROOT / package / "__init__.py").exists(), f"slipway/{package}/ is missing"
