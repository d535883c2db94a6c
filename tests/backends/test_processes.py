"""/proc reads: process identity across pid reuse, exit checks without reaping, exit descriptions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from slipway.backends import processes


def test_identity_is_pid_and_start_time():
    me = processes.read_stat(os.getpid())
    assert me is not None and me.state in "RS" and not me.exited
    assert processes.is_running(os.getpid(), me.start_ticks)
    assert not processes.is_running(os.getpid(), me.start_ticks + 1)  # same pid, another process
    assert processes.read_stat(2**22 + 12345) is None  # above pid_max: never a process


def test_child_exited_does_not_reap_so_the_pid_stays_reserved():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        ticks = processes.start_ticks(child.pid)
        assert not processes.child_exited(child.pid)
        assert processes.signal_group(child.pid, signal.SIGKILL)
        while not processes.child_exited(child.pid):
            time.sleep(0.01)
        # Exited but not reaped: a zombie that still holds its pid (and group id).
        assert processes.read_stat(child.pid).state == "Z"
        assert processes.holds_pid(child.pid, ticks) and not processes.is_running(child.pid, ticks)
        assert child.wait(timeout=5) == -signal.SIGKILL
        assert not processes.signal_group(child.pid, signal.SIGKILL)  # the group is empty now
    finally:
        child.kill()
        child.wait()


def test_describe_exit():
    assert processes.describe_exit(0) == "exited with code 0"
    assert processes.describe_exit(3) == "exited with code 3"
    assert processes.describe_exit(-9) == "killed by SIGKILL"
    assert "unknown" in processes.describe_exit(None)
