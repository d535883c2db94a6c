"""Processes on this machine as /proc shows them: an identity that survives pid reuse, group signals.

A pid alone does not name a process: after it exits the kernel may hand the same number to an
unrelated one. A (pid, start time) pair does, where the start time is field 22 of
/proc/<pid>/stat (clock ticks since boot). The local backend stores that pair and checks it
before adopting, probing or signalling a process it did not spawn itself.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

# Field numbers of /proc/<pid>/stat (1-based, as in proc(5)); the text after "comm)" starts at 3.
_STATE_FIELD = 3
_START_TIME_FIELD = 22


@dataclass(frozen=True)
class ProcStat:
    """The parts of /proc/<pid>/stat the backend needs."""

    state: str
    """One letter: R running, S sleeping, Z zombie (exited, not yet reaped), ..."""
    start_ticks: int
    """Clock ticks after boot at which the process started."""

    @property
    def exited(self) -> bool:
        return self.state in ("Z", "X", "x")


def read_stat(pid: int) -> ProcStat | None:
    """The process's stat, or None when no process has that pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            text = file.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    # comm may hold spaces and parentheses; it ends at the last ')'.
    fields = text.rsplit(")", 1)[-1].split()
    try:
        return ProcStat(state=fields[_STATE_FIELD - 3], start_ticks=int(fields[_START_TIME_FIELD - 3]))
    except (IndexError, ValueError):
        return None


def start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks after boot), or None when it is gone."""
    stat = read_stat(pid)
    return stat.start_ticks if stat is not None else None


def is_running(pid: int, ticks: int) -> bool:
    """True if `pid` is still the process that started at `ticks` and it has not exited."""
    stat = read_stat(pid)
    return stat is not None and stat.start_ticks == ticks and not stat.exited


def holds_pid(pid: int, ticks: int) -> bool:
    """True if `pid` still belongs to that process, running or a zombie (so its group id is safe to signal)."""
    stat = read_stat(pid)
    return stat is not None and stat.start_ticks == ticks


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send `sig` to every process of the group; False when the group is already empty."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def child_exited(pid: int) -> bool:
    """True if our child `pid` has exited, without reaping it (its pid and group stay reserved)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # already reaped
        return True


def describe_exit(returncode: int | None) -> str:
    """'exited with code 1', 'killed by SIGKILL', or 'exited (exit code unknown)'."""
    if returncode is None:
        return "exited (exit code unknown: it was started by an earlier control plane)"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"
