"""The local backend's on-disk registry of replica processes: $SLIPWAY_HOME/run/replicas/<id>.json.

One small JSON file per replica, written atomically when it starts and removed when it is
forgotten. It outlives the control plane, which is how the next one finds the replicas the last
one started: a record whose (pid, start time) still names a running process is adopted, any other
is stale and removed. Log files live apart, under logs/replicas/, and are never removed here.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from slipway.errors import BackendError

log = logging.getLogger(__name__)

RUN_DIR = Path("run") / "replicas"
LOG_DIR = Path("logs") / "replicas"

# Replica ids name files, so they may not hold path separators or start with a dot.
_REPLICA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ReplicaRecord(BaseModel):
    """What the backend must remember about one replica process across control-plane restarts."""

    replica_id: str = Field(description="The replica's id; also names its record, port and log files.")
    deployment_id: str = Field(description="The deployment the replica serves.")
    pid: int = Field(description="Process id; also its process group id (it leads its own session).")
    pid_start_ticks: int = Field(description="Start time from /proc/<pid>/stat; tells a reused pid apart.")
    port_file: str = Field(description="Where the replica writes its port once it listens.")
    package_dir: str = Field(description="The package snapshot it serves (also its working directory).")
    log_file: str = Field(description="Its stdout and stderr, appended.")
    started_at: float = Field(description="Unix time it was launched.")


def check_replica_id(replica_id: str) -> str:
    """The id, if it is safe to use in file names; else BackendError saying what is allowed."""
    if not _REPLICA_ID.match(replica_id):
        raise BackendError(
            f"replica id {replica_id!r} cannot name a file; use letters, digits, '.', '_' and '-' "
            "(at most 128, not starting with '.' or '-')"
        )
    return replica_id


class Registry:
    """The record, port and log files of replicas under one slipway home."""

    def __init__(self, home: Path) -> None:
        self.run_dir = Path(home) / RUN_DIR
        self.log_dir = Path(home) / LOG_DIR
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def record_path(self, replica_id: str) -> Path:
        return self.run_dir / f"{check_replica_id(replica_id)}.json"

    def port_path(self, replica_id: str) -> Path:
        return self.run_dir / f"{check_replica_id(replica_id)}.port"

    def log_path(self, replica_id: str) -> Path:
        return self.log_dir / f"{check_replica_id(replica_id)}.log"

    def write(self, record: ReplicaRecord) -> None:
        """Save the record so a reader sees the old file or the whole new one, never a part."""
        path = self.record_path(record.replica_id)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(record.model_dump_json())
        os.replace(tmp, path)

    def read_all(self) -> list[ReplicaRecord]:
        """Every readable record; unreadable ones are removed (a crash mid-write leaves only a .tmp)."""
        records = []
        for path in sorted(self.run_dir.glob("*.json")):
            try:
                records.append(ReplicaRecord.model_validate_json(path.read_bytes()))
            except (OSError, ValidationError, ValueError) as exc:
                log.warning("removing unreadable replica record %s: %s", path, exc)
                path.unlink(missing_ok=True)
        for leftover in self.run_dir.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        return records

    def remove(self, replica_id: str) -> None:
        """Drop the record and the port file (the log stays)."""
        self.record_path(replica_id).unlink(missing_ok=True)
        self.port_path(replica_id).unlink(missing_ok=True)

    def read_port(self, replica_id: str) -> int | None:
        """The port the replica listens on, once it has written it."""
        try:
            text = self.port_path(replica_id).read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() and 0 < int(text) < 65536 else None

    def tail_log(self, replica_id: str, lines: int, *, max_bytes: int = 1 << 20) -> str | None:
        """The last `lines` lines of the replica's log (read from the end, at most `max_bytes`); None if absent."""
        path = self.log_path(replica_id)
        try:
            with open(path, "rb") as file:
                size = file.seek(0, os.SEEK_END)
                chunk = 64 * 1024
                data = b""
                position = size
                while position > 0 and data.count(b"\n") <= lines and len(data) < max_bytes:
                    step = min(chunk, position)
                    position -= step
                    file.seek(position)
                    data = file.read(step) + data
        except FileNotFoundError:
            return None
        text = data.decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""
