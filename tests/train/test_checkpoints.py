"""Checkpoint folders appear whole or not at all; the latest is the highest step; old ones are pruned."""

from __future__ import annotations

import pytest

from slipway.train.checkpoints import latest_checkpoint, list_checkpoints, prune, remove_partial, write_checkpoint


def _contents(folder):
    (folder / "adapter").mkdir()
    (folder / "adapter" / "weights.bin").write_bytes(b"w")


def test_written_checkpoints_are_listed_by_step(tmp_path):
    for step in (10, 2, 30):
        write_checkpoint(tmp_path, step, {"step": step}, _contents)
    assert [c.step for c in list_checkpoints(tmp_path)] == [2, 10, 30]
    latest = latest_checkpoint(tmp_path)
    assert (latest.step, latest.state, latest.path.name) == (30, {"step": 30}, "step-30")
    assert (latest.adapter / "weights.bin").read_bytes() == b"w"


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    def broken(folder):
        _contents(folder)
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_checkpoint(tmp_path, 5, {"step": 5}, broken)
    assert list(tmp_path.iterdir()) == []
    assert latest_checkpoint(tmp_path) is None


def test_half_written_folders_are_ignored_and_removed(tmp_path):
    write_checkpoint(tmp_path, 1, {"step": 1}, _contents)
    (tmp_path / ".tmp-step-2-abc").mkdir()        # a crash mid-write
    (tmp_path / "step-3").mkdir()                 # no state.json: not a checkpoint
    assert [c.step for c in list_checkpoints(tmp_path)] == [1]
    remove_partial(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-1", "step-3"]


def test_rewriting_a_step_replaces_it(tmp_path):
    write_checkpoint(tmp_path, 4, {"step": 4, "v": 1}, _contents)
    write_checkpoint(tmp_path, 4, {"step": 4, "v": 2}, _contents)
    assert [c.state["v"] for c in list_checkpoints(tmp_path)] == [2]


def test_prune_keeps_the_newest(tmp_path):
    for step in (1, 2, 3, 4):
        write_checkpoint(tmp_path, step, {"step": step}, _contents)
    assert prune(tmp_path, keep=2) == [1, 2]
    assert [c.step for c in list_checkpoints(tmp_path)] == [3, 4]
