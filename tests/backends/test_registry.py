"""The local backend's on-disk registry: records, ports and log tails."""

from __future__ import annotations

import pytest

from slipway.backends.registry import Registry, ReplicaRecord
from slipway.errors import BackendError


def record(replica_id: str = "r-1") -> ReplicaRecord:
    return ReplicaRecord(replica_id=replica_id, deployment_id="dep-1", pid=123, pid_start_ticks=456,
                         port_file="/tmp/p", package_dir="/tmp/pkg", log_file="/tmp/l", started_at=1.5)


def test_records_round_trip_and_unreadable_ones_are_removed(tmp_path):
    registry = Registry(tmp_path)
    registry.write(record("r-1"))
    registry.write(record("r-2"))
    (registry.run_dir / "r-torn.json").write_text('{"replica_id": "r-torn", "pid"')
    (registry.run_dir / ".r-3.json.99.tmp").write_text("{}")

    assert [r.replica_id for r in registry.read_all()] == ["r-1", "r-2"]
    assert registry.read_all()[0] == record("r-1")
    assert sorted(p.name for p in registry.run_dir.iterdir()) == ["r-1.json", "r-2.json"]


def test_remove_drops_record_and_port_but_keeps_the_log(tmp_path):
    registry = Registry(tmp_path)
    registry.write(record("r-1"))
    registry.port_path("r-1").write_text("8123")
    registry.log_path("r-1").write_text("hello\n")
    assert registry.read_port("r-1") == 8123

    registry.remove("r-1")
    assert registry.read_all() == [] and registry.read_port("r-1") is None
    assert registry.tail_log("r-1", 5) == "hello"


@pytest.mark.parametrize("text", ["", "12ab", "0", "70000"])
def test_a_port_file_that_is_not_a_port_reads_as_none(tmp_path, text):
    registry = Registry(tmp_path)
    registry.port_path("r-1").write_text(text)
    assert registry.read_port("r-1") is None


def test_tail_log_returns_the_last_lines_of_a_long_log(tmp_path):
    registry = Registry(tmp_path)
    registry.log_path("r-1").write_text("".join(f"line {i}\n" for i in range(50_000)))
    assert registry.tail_log("r-1", 3) == "line 49997\nline 49998\nline 49999"
    assert registry.tail_log("r-1", 0) == ""
    assert registry.tail_log("r-missing", 3) is None


@pytest.mark.parametrize("bad", ["../x", "a/b", ".hidden", "", "-flag", "x" * 129])
def test_ids_that_cannot_name_a_file_are_refused(tmp_path, bad):
    with pytest.raises(BackendError, match="cannot name a file"):
        Registry(tmp_path).record_path(bad)
