"""Uploaded packages: a .tar.gz unpacked safely into a private folder, then validated.

Nothing in an upload is trusted. Members with absolute paths, `..`, links or device files are
refused; sizes and file counts are bounded while reading, so a compressed bomb stops early.
The result is a folder ready to be moved into place and the parsed `PackageSpec`; any problem
raises `SpecError` (or `PackageTooLargeError`) and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from slipway.control.config import PackageLimits
from slipway.errors import SpecError
from slipway.spec.package import PACKAGE_FILE, PackageSpec, check_package_files, parse_package

_CHUNK = 1024 * 1024


class PackageTooLargeError(SpecError):
    """An upload over the configured size or file-count limits."""

    status_code = 413
    code = "package_too_large"


@dataclass(frozen=True)
class UnpackedPackage:
    spec: PackageSpec
    root: Path          # the package folder (holds slipway.yaml)
    workdir: Path       # the private folder `root` lies in; remove it when done
    sha256: str         # of the uploaded bytes
    unpacked_bytes: int


def unpack_package(data: bytes, staging: Path, limits: PackageLimits) -> UnpackedPackage:
    """Unpack `data` (a .tar.gz of a package folder) under `staging` and validate it."""
    if len(data) > limits.max_upload_bytes:
        raise PackageTooLargeError(
            f"package upload is {len(data)} bytes, over the limit of {limits.max_upload_bytes}; "
            "keep large weights out of the package (weights: pkg:<python package>/<path>) or raise the limit"
        )
    staging.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="upload-", dir=staging))
    try:
        total = _extract(data, workdir, limits)
        root = _package_root(workdir)
        spec = _validate(root)
        return UnpackedPackage(spec=spec, root=root, workdir=workdir, sha256=hashlib.sha256(data).hexdigest(),
                               unpacked_bytes=total)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _extract(data: bytes, dest: Path, limits: PackageLimits) -> int:
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise SpecError(f"the upload is not a .tar.gz of a package folder ({exc}); "
                        "send the output of `tar czf - -C PACKAGE_DIR .` or use `slipway deploy`",
                        code="invalid_package") from None
    total = 0
    count = 0
    with archive:
        try:
            for member in archive:
                relative = _safe_relative_path(member)
                if relative is None:
                    continue
                count += 1
                if count > limits.max_files:
                    raise PackageTooLargeError(
                        f"package has more than {limits.max_files} files; leave caches and data out of it")
                target = dest.joinpath(*relative.parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                total += _copy_file(archive, member, target, limits.max_unpacked_bytes - total)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise SpecError(f"the upload is a damaged archive ({exc}); pack the folder again",
                            code="invalid_package") from None
    return total


def _safe_relative_path(member: tarfile.TarInfo) -> PurePosixPath | None:
    """The member's path inside the package, or None for the root entry; refuse anything unsafe."""
    name = member.name
    if name.startswith("/") or PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise SpecError(f"package member {name!r} has an absolute path; paths must be relative to the package",
                        code="unsafe_package")
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", ".")]
    if ".." in parts:
        raise SpecError(f"package member {name!r} points outside the package ('..'); remove it",
                        code="unsafe_package")
    if member.issym() or member.islnk():
        raise SpecError(f"package member {name!r} is a link; links are not allowed, copy the file instead",
                        code="unsafe_package")
    if not (member.isfile() or member.isdir()):
        raise SpecError(f"package member {name!r} is not a regular file or folder; remove it",
                        code="unsafe_package")
    return PurePosixPath(*parts) if parts else None


def _copy_file(archive: tarfile.TarFile, member: tarfile.TarInfo, target: Path, budget: int) -> int:
    if member.size > budget:
        raise PackageTooLargeError("package unpacks to more than the allowed size; leave large files out of it")
    target.parent.mkdir(parents=True, exist_ok=True)
    source = archive.extractfile(member)
    written = 0
    mode = 0o755 if member.mode & 0o111 else 0o644
    # O_EXCL: a second member with the same name must not overwrite (or follow) the first.
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    except FileExistsError:
        raise SpecError(f"package member {member.name!r} appears twice; pack the folder again",
                        code="invalid_package") from None
    with os.fdopen(fd, "wb") as out:
        while source is not None and (chunk := source.read(_CHUNK)):
            written += len(chunk)
            if written > budget:
                raise PackageTooLargeError("package unpacks to more than the allowed size; leave large files out of it")
            out.write(chunk)
    return written


def _package_root(workdir: Path) -> Path:
    """The folder holding slipway.yaml: the top, or the single folder at the top (`tar czf x.tgz pkg/`)."""
    if (workdir / PACKAGE_FILE).is_file():
        return workdir
    entries = list(workdir.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / PACKAGE_FILE).is_file():
        return entries[0]
    raise SpecError(f"the package has no {PACKAGE_FILE} at its top; pack the folder that holds it",
                    code="invalid_package")


def _validate(root: Path) -> PackageSpec:
    try:
        text = (root / PACKAGE_FILE).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"{PACKAGE_FILE} is not UTF-8 text; save it as UTF-8", code="invalid_package") from None
    spec = parse_package(text, source=PACKAGE_FILE)
    check_package_files(spec, {entry.name for entry in root.iterdir()}, source="package")
    problems = [f"{field}: {path!r} is not in the package; add it or fix the path"
                for field, path in _local_paths(spec) if not (root / path).exists()]
    if problems:
        raise SpecError(f"{PACKAGE_FILE}: {len(problems)} problem(s)", problems, code="invalid_package")
    return spec


def _local_paths(spec: PackageSpec) -> list[tuple[str, str]]:
    """Relative paths the spec names inside the package (weights and adapters that are not pkg: or absolute)."""
    named = [("weights", spec.weights)] + [(f"adapters.{name}", path) for name, path in spec.adapters.items()]
    return [(field, path) for field, path in named
            if path and not path.startswith(("pkg:", "~")) and not os.path.isabs(path)]
