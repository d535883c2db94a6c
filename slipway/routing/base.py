"""The routing contract: pick one replica of a deployment for one request.

    policy = get_policy("least_load")
    replica = policy.choose(replicas, RouteRequest(deployment_id), exclude=frozenset({"r-dead"}))
    if replica is None: ...      # no healthy replica outside `exclude`: the caller answers 503

A policy sees a snapshot of each replica (`ReplicaView`) taken by the caller at the moment of the
decision: in-flight count and health as the gateway knows them, and for `kv_aware` the replica's
reported summary of cached KV blocks. It never does I/O and never reads a clock, so the gateway and
the fleet simulator drive the same code. Policies keep state between calls (a rotation counter, a
prefix index); one instance serves one deployment.

Contract of `choose`, for every policy:
  - the result is one of `replicas`, healthy, and not in `exclude`;
  - the result is None only when no replica is both healthy and outside `exclude`;
  - every non-None result is passed to `on_routed(request, result)` before it is returned.

The learning hook: `on_routed` is how a policy learns from its own traffic (`prefix_aware` records
which replica last took a prompt prefix; `kv_aware` records which blocks it just sent where, before
the replica's next report says so). `choose` calls it, so callers never do; a retry that calls
`choose` again with the failed replica excluded simply records the new choice over the old one.

What a caller fills in (`RouteRequest`), by policy:
  - round_robin, least_load: only `deployment_id`;
  - prefix_aware: `prompt_text` (see `prompt.prompt_text`), or at least `prompt_key`;
  - kv_aware: `block_hashes` (see `hashing.block_hash_chain`), and `ReplicaView.cached_block_hashes`.
A policy whose `needs_prompt` is False ignores the prompt, so the caller may skip parsing the body;
only a policy whose `needs_block_hashes` is True makes the caller tokenize it (CPU work per request).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Sequence


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica as the caller sees it right now."""

    replica_id: str
    url: str
    in_flight: int
    """Requests sent to it and not yet answered to their last byte."""
    healthy: bool
    """Ready in the routing snapshot and not marked down by a recent failure."""
    cached_block_hashes: frozenset[int] | None = None
    """The KV blocks the replica last reported holding, as 63-bit chained block hashes (see
    `hashing.block_hash_chain`); a bounded summary, so absence is a hint, not proof. None: unknown."""


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What a policy may know of the request being routed."""

    deployment_id: str
    prompt_key: str | None = None
    """A stable digest of the prompt's leading text, for prefix-aware policies; None when unknown."""
    prompt_text: str | None = None
    """The prompt as text (chat messages flattened, see `prompt.prompt_text`); only its leading
    characters are read. None when unknown or when the policy does not need it."""
    block_hashes: tuple[int, ...] = ()
    """The prompt's chained KV block hashes (`hashing.block_hash_chain` over its token ids with the
    replicas' block size); empty when the caller did not tokenize the prompt."""


class RoutingPolicy(ABC):
    """Chooses a replica for a request. Subclasses set `name` and implement `_choose`."""

    name: str = ""
    needs_prompt: ClassVar[bool] = False
    """True when the policy reads `prompt_text`, `prompt_key` or `block_hashes` of a request."""
    needs_block_hashes: ClassVar[bool] = False
    """True when the policy reads `block_hashes` of a request and `cached_block_hashes` of replicas: the
    caller then tokenizes prompts as the replicas do and keeps the replicas' reported cache summaries."""

    def choose(self, replicas: Sequence[ReplicaView], request: RouteRequest, *,
               exclude: frozenset[str] = frozenset()) -> ReplicaView | None:
        """A healthy replica not in `exclude`, or None when there is none."""
        candidates = [r for r in replicas if r.healthy and r.replica_id not in exclude]
        if not candidates:
            return None
        chosen = self._choose(candidates, request)
        self.on_routed(request, chosen)
        return chosen

    @abstractmethod
    def _choose(self, candidates: Sequence[ReplicaView], request: RouteRequest) -> ReplicaView:
        """Pick one of `candidates` (never empty; every one healthy and allowed)."""

    def on_routed(self, request: RouteRequest, replica: ReplicaView) -> None:
        """Learn that `request` was sent to `replica`; `choose` calls it with every choice it returns.

        The default learns nothing. Overrides must stay bounded in memory whatever the traffic.
        """
