"""`slipway init`: write a model package that deploys as is, from `templates/<kind>/`.

Each template file is named `<file>.tmpl`; `{{name}}` in it becomes the model name. The
rendered `slipway.yaml` is parsed before anything is written, so a broken template or name
never leaves a half-written folder behind.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from slipway.errors import ConflictError, SpecError
from slipway.spec.package import NAME_PATTERN, PACKAGE_FILE, check_package_files, parse_package

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE_SUFFIX = ".tmpl"
PackageKind = Literal["custom", "embedding", "llm"]


def scaffold_package(name: str, kind: PackageKind, dest: Path) -> Path:
    """Write a `kind` package named `name` into `dest` (created; must be absent or empty)."""
    if not re.match(NAME_PATTERN, name):
        raise SpecError(
            f"{name!r} is not a valid model name; use lowercase letters, digits and dashes, "
            f"starting with a letter or digit (e.g. {_suggest(name)!r})",
            code="invalid_name",
        )
    template_dir = TEMPLATES / kind
    if kind not in ("custom", "embedding", "llm") or not template_dir.is_dir():
        raise SpecError(f"{kind!r} is not a package kind; use custom, embedding or llm", code="invalid_kind")
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ConflictError(f"{dest} already exists and is not an empty folder; choose another --dir or remove it")

    files = {
        template.name.removesuffix(TEMPLATE_SUFFIX): template.read_text().replace("{{name}}", name)
        for template in sorted(template_dir.iterdir())
        if template.name.endswith(TEMPLATE_SUFFIX)
    }
    spec = parse_package(files[PACKAGE_FILE], source=str(dest / PACKAGE_FILE))
    check_package_files(spec, set(files), source=str(dest))

    dest.mkdir(parents=True, exist_ok=True)
    for filename, text in files.items():
        (dest / filename).write_text(text)
    return dest


def _suggest(name: str) -> str:
    """A valid name close to `name`: lowercase, runs of other characters as one dash."""
    suggestion = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63]
    return suggestion or "my-model"
