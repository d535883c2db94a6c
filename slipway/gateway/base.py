"""What the gateway needs from the rest of slipway: a routing snapshot source, a usage sink and a trace sink.

    SnapshotSource                       where routes come from
      current() -> RoutingSnapshot           the newest snapshot this source has
      await wait_newer(after, timeout)       a snapshot newer than `after` at once if there is one,
                                             else waits up to `timeout` s and returns current()
    UsageSink                            where usage records go
      write(records) -> None                 sync, called from a worker thread, never the event loop;
                                             must be idempotent on request_id (a journal segment is
                                             replayed whole after a crash)
    TraceSink                            where captured traces go (capture.py)
      write(records) -> None                 sync, from the capture worker thread; idempotent on the
                                             trace id (the usage request id), like UsageSink

The control plane's `SnapshotPublisher` is a SnapshotSource in process; `HttpSnapshotSource`
long-polls a control plane in another process; `StaticSnapshotSource` serves a fixed snapshot
(tests, benchmarks). `store.usage.insert_many` is a UsageSink, `store.traces.insert_many` a TraceSink.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from slipway.spec.snapshot import RoutingSnapshot
from slipway.spec.usage import UsageRecord

if TYPE_CHECKING:
    from slipway.store import Store, TraceRecord


@runtime_checkable
class SnapshotSource(Protocol):
    def current(self) -> RoutingSnapshot: ...

    async def wait_newer(self, after_version: int, timeout: float) -> RoutingSnapshot: ...


class UsageSink(Protocol):
    def write(self, records: list[UsageRecord]) -> None: ...


class TraceSink(Protocol):
    def write(self, records: "list[TraceRecord]") -> None: ...


class StoreUsageSink:
    """A UsageSink over the store's usage repository (`store.usage.insert_many`)."""

    def __init__(self, store: "Store") -> None:
        self._store = store

    def write(self, records: list[UsageRecord]) -> None:
        self._store.usage.insert_many(records)


class StoreTraceSink:
    """A TraceSink over the store's traces repository (`store.traces.insert_many` skips ids it has)."""

    def __init__(self, store: "Store") -> None:
        self._store = store

    def write(self, records: "list[TraceRecord]") -> None:
        self._store.traces.insert_many(records)
