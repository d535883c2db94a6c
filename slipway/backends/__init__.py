"""Backends: where replica processes actually run, behind one `Backend` interface.

    base.py        Backend: start / stop / observe / forget / logs / close (the contract)
    local.py       LocalBackend: replicas as subprocesses of this machine
    registry.py    the local backend's on-disk records (run/replicas/) and logs (logs/replicas/)
    processes.py   /proc reads: process identity across pid reuse, exit checks, group signals
"""

from slipway.backends.base import Backend
from slipway.backends.local import LocalBackend

__all__ = ["Backend", "LocalBackend"]
