"""The replica's serving state: loading, ready or failed, draining, and the work in flight.

    LOADING ──load ok──► READY ──drain──► DRAINING (refuses new work; in-flight work finishes)
       │                                      ▲
       ├──load raised──► FAILED               │
       └──────────────────drain───────────────┘

Only the event loop touches it, so plain attributes need no lock.
"""

from __future__ import annotations

import asyncio
import time


class ServingState:
    """Flags and counters the routes read and the process lifecycle waits on."""

    def __init__(self) -> None:
        self.loaded = False
        self.load_error: str | None = None
        self.draining = False
        self.in_flight = 0
        self.requests_total = 0
        self.started_at = time.time()
        self.loaded_at: float | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def phase(self) -> str:
        if self.draining:
            return "draining"
        if self.load_error is not None:
            return "failed"
        return "ready" if self.loaded else "loading"

    @property
    def ready(self) -> bool:
        return self.phase == "ready"

    def mark_loaded(self) -> None:
        self.loaded = True
        self.loaded_at = time.time()

    def begin(self) -> None:
        """One request of work admitted."""
        self.in_flight += 1
        self.requests_total += 1
        self._idle.clear()

    def end(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no work is in flight, at most `timeout` seconds; True if it got there."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return self.in_flight == 0
