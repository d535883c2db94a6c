"""The cold-start hold: requests for a deployment with no ready replica wait for one instead of failing.

    target = await hold.until_ready(call, target, resolve, receive)   # None: the client left meanwhile

A deployment that exists but has no ready replica (scaled to zero, or its replicas still
starting) gets its requests held in a bounded per-deployment queue:

    arrive ─► queue full? ──yes──► 429 rate_limit_error, Retry-After
                 │ no
                 ▼
              queued += 1 (the load report's `queued`, read by the autoscaler), on_demand(deployment)
                 │
                 ▼
              wait for the next routing table ◄─────────────┐
                 │ re-resolve: the replicas, even the       │ still none ready
                 │ deployment behind the environment,       │
                 │ may have changed                         │
                 ├──────────────────────────────────────────┘
                 ├─► a ready replica: served (call.held marks it for the cold-start metric)
                 ├─► cold_start_timeout passed: 503 server_error, Retry-After
                 └─► the client disconnected: leaves the queue at once, nothing answered

Deployments that failed to load or were deactivated are not held: no replica is coming, so
they are refused at once. The routing table is followed by one task in the app; held requests
wait on `table_changed()`, not on the snapshot source, so a thousand held requests cost one
long poll, not a thousand.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Callable

from slipway.errors import BackendError
from slipway.gateway.config import GatewayConfig
from slipway.gateway.errors import (
    ColdStartQueueFullError, ColdStartTimeoutError, NoReadyReplicaError, NotServingError,
)
from slipway.gateway.http import Receive
from slipway.gateway.table import Target

if TYPE_CHECKING:
    from slipway.gateway.proxy import Call

log = logging.getLogger(__name__)

# Deployment statuses (from the routing snapshot) for which no replica is on its way.
_NOT_SERVING = frozenset({"failed", "inactive"})


class ColdStartHold:
    """Requests held until their deployment has a ready replica; see the module docstring."""

    def __init__(self, config: GatewayConfig, on_demand: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.on_demand = on_demand
        self.queued: dict[str, int] = {}
        """deployment id -> requests held for it now."""
        self.stopping = False
        self._next_table: asyncio.Future[None] | None = None

    # -- told by the app ------------------------------------------------------------------------

    def table_changed(self) -> None:
        """A newer routing table is installed: every held request looks again."""
        waiter, self._next_table = self._next_table, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def stop(self) -> None:
        """The gateway stops: held requests are answered 503 now rather than cut off."""
        self.stopping = True
        self.table_changed()

    # -- one request ----------------------------------------------------------------------------

    async def until_ready(self, call: "Call", target: Target, resolve: Callable[[], Target],
                          receive: Receive) -> Target | None:
        """`target` once it has a ready replica, re-resolved with `resolve()` after every table change;
        None when the client disconnected while held. Raises the error to answer otherwise."""
        if target.route.has_ready:
            return target
        _refuse_not_serving(target)
        limit = self.config.max_queued_per_deployment
        if limit == 0:
            raise NoReadyReplicaError(_no_ready_message(target, "retry in a few seconds"))
        deployment_id = target.route.entry.deployment_id
        if self.queued.get(deployment_id, 0) >= limit:
            raise ColdStartQueueFullError(
                f"{limit} requests are already waiting for model {target.model_name!r} (deployment "
                f"{deployment_id}) to get a ready replica, the most this gateway holds for one deployment "
                "(max_queued_per_deployment); retry after the Retry-After delay")
        call.held = True
        self._enter(deployment_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.cold_start_timeout
        # The body is read whole, so the next message can only be the client disconnecting.
        gone = asyncio.ensure_future(receive())
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise ColdStartTimeoutError(_no_ready_message(
                        target, "retry in a few seconds (a replica may still be loading), or keep one warm "
                        "with min_replica >= 1",
                        f" after waiting {self.config.cold_start_timeout:g}s (cold_start_timeout)"))
                table = self._table_waiter(loop)
                await asyncio.wait((gone, table), timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if gone.done():
                    return None
                if self.stopping:
                    raise BackendError("the gateway is stopping; retry shortly", code="gateway_not_running")
                if not table.done():
                    continue  # the timeout: answered at the top of the loop
                resolved = resolve()
                moved_to = resolved.route.entry.deployment_id
                if moved_to != deployment_id:  # the environment now points at another deployment
                    self._leave(deployment_id)
                    self._enter(moved_to)
                    deployment_id = moved_to
                target = resolved
                if target.route.has_ready:
                    return target
                _refuse_not_serving(target)
        finally:
            self._leave(deployment_id)
            if not gone.done():
                gone.cancel()

    # -- internals ------------------------------------------------------------------------------

    def _table_waiter(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        waiter = self._next_table
        if waiter is None or waiter.done():
            waiter = self._next_table = loop.create_future()
        return waiter

    def _enter(self, deployment_id: str) -> None:
        self.queued[deployment_id] = self.queued.get(deployment_id, 0) + 1
        if self.on_demand is not None:
            try:
                self.on_demand(deployment_id)
            except Exception:  # noqa: BLE001 - the autoscaler still sees `queued` on its next tick
                log.exception("signalling demand for deployment %s failed", deployment_id)

    def _leave(self, deployment_id: str) -> None:
        left = self.queued.get(deployment_id, 1) - 1
        if left > 0:
            self.queued[deployment_id] = left
        else:
            self.queued.pop(deployment_id, None)


def _refuse_not_serving(target: Target) -> None:
    entry = target.route.entry
    if entry.status not in _NOT_SERVING:
        return
    name, deployment_id = target.model_name, entry.deployment_id
    if entry.status == "failed":
        raise NotServingError(f"model {name!r} (deployment {deployment_id}) failed to load and serves nothing; "
                              f"`slipway logs {deployment_id}` shows why; fix the package and deploy it again")
    raise NotServingError(f"model {name!r} (deployment {deployment_id}) is inactive; bring it back with "
                          f"`slipway scale {deployment_id} --replicas 1`, or promote another deployment")


def _no_ready_message(target: Target, fix: str, waited: str = "") -> str:
    route = target.route
    state = (f"{len(route.replicas)} starting" if route.replicas
             else "none running: scaled to zero, or not started yet")
    return (f"model {target.model_name!r} (deployment {route.entry.deployment_id}) has no ready replica "
            f"({state}){waited}; {fix}")
