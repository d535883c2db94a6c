"""Resumable training checkpoints, each one folder written whole or not at all.

    checkpoints/step-40/
      adapter/                 PEFT adapter (adapter_config.json, adapter_model.safetensors)
      training_state.pt        optimizer, LR scheduler and random number generator states
      state.json               step, position in the data order, metrics so far, the run's fingerprint

A checkpoint is built in a hidden sibling folder (`.tmp-step-40-…`), every file fsynced, then
renamed to `step-40`: a rename is atomic, so a `step-N` folder is always complete, and a crash
mid-write leaves only a hidden folder that the next start deletes. The latest checkpoint is
the highest N. Only the newest `keep` checkpoints stay on disk.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

STATE_FILE = "state.json"
TRAINING_STATE_FILE = "training_state.pt"
ADAPTER_SUBDIR = "adapter"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint folder and its state.json."""

    path: Path
    step: int
    state: dict[str, Any]

    @property
    def adapter(self) -> Path:
        return self.path / ADAPTER_SUBDIR

    @property
    def training_state(self) -> Path:
        return self.path / TRAINING_STATE_FILE


def step_dir_name(step: int) -> str:
    return f"step-{step}"


def list_checkpoints(folder: Path) -> list[Checkpoint]:
    """The complete checkpoints under `folder`, by step ascending."""
    found = []
    if not folder.is_dir():
        return found
    for entry in folder.iterdir():
        match = _STEP_DIR.match(entry.name)
        state_file = entry / STATE_FILE
        if match and state_file.is_file():
            found.append(Checkpoint(path=entry, step=int(match.group(1)),
                                    state=json.loads(state_file.read_text(encoding="utf-8"))))
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(folder: Path) -> Checkpoint | None:
    checkpoints = list_checkpoints(folder)
    return checkpoints[-1] if checkpoints else None


def remove_partial(folder: Path) -> None:
    """Delete folders a crash left half-written."""
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name.startswith(_TMP_PREFIX):
                shutil.rmtree(entry, ignore_errors=True)


def write_checkpoint(folder: Path, step: int, state: dict[str, Any],
                     write_contents: Callable[[Path], None]) -> Checkpoint:
    """Write checkpoint `step`: `write_contents(tmp)` fills the folder, then state.json goes in last.

    The folder is then renamed into place; a checkpoint of the same step already there is replaced.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f"{_TMP_PREFIX}{step_dir_name(step)}-"))
    try:
        write_contents(tmp)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True, allow_nan=False) + "\n",
                                      encoding="utf-8")
        _fsync_tree(tmp)
        final = folder / step_dir_name(step)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Checkpoint(path=final, step=step, state=state)


def prune(folder: Path, keep: int) -> list[int]:
    """Delete all but the newest `keep` checkpoints; returns the steps deleted."""
    checkpoints = list_checkpoints(folder)
    doomed = checkpoints[:-keep] if keep > 0 else checkpoints
    for checkpoint in doomed:
        shutil.rmtree(checkpoint.path, ignore_errors=True)
    return [c.step for c in doomed]


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    for path in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
