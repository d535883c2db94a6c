"""The `Backend` contract: how the control plane runs replicas without knowing where they run.

The reconciler decides which replicas should exist; a backend makes it so and reports what it
sees. Every method is idempotent where it can be, and `observe()` is the only source of truth:
a backend never pushes state, the reconciler pulls it each tick.

    start(launch)  ──►  STARTING ──/health/ready 200──► READY
                            │                             │
                            │        stop(): SIGTERM ──► DRAINING ──exit──► STOPPED
                            │                             │
                            └──────── exited ─────────────┴──► CRASHED (or FAILED: exit code 3)

    forget(id)     drops a STOPPED / CRASHED / FAILED replica; its log stays readable by logs(id)
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from slipway.spec.replica import ReplicaLaunch, ReplicaObservation


class Backend(ABC):
    """Runs replica processes somewhere and reports what it sees of them."""

    name: str
    """Short name shown in listings, e.g. 'local' or 'ray'."""

    @abstractmethod
    async def start(self, launch: ReplicaLaunch) -> ReplicaObservation:
        """Launch one replica and return at once, in state STARTING (readiness comes later, via observe)."""

    @abstractmethod
    async def stop(self, replica_id: str, *, drain_timeout: float = 30.0) -> None:
        """Ask the replica to drain (SIGTERM), kill it after `drain_timeout` seconds; no-op if gone or unknown.

        Returns once the process has exited. The replica stays observable (STOPPED) until `forget`.
        """

    @abstractmethod
    async def observe(self) -> list[ReplicaObservation]:
        """Every replica this backend knows, including ones adopted from an earlier control plane.

        Probes GET /health/ready; a process that exited is CRASHED, or FAILED if its exit code is
        EXIT_LOAD_FAILED, or STOPPED if it was asked to stop.
        """

    @abstractmethod
    async def forget(self, replica_id: str) -> None:
        """Drop a stopped, crashed or failed replica from the registry (its log file stays)."""

    @abstractmethod
    async def logs(self, replica_id: str, *, tail: int = 200) -> str:
        """The last `tail` lines of the replica's output, also after it died or was forgotten."""

    @abstractmethod
    async def close(self) -> None:
        """Release the backend's own resources; replicas keep running for the next control plane."""
