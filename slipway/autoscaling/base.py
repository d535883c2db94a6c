"""The autoscaling contract: load samples in, a typed scaling decision and the remembered state out.

    decision, state = policy.decide(window.samples(deployment_id, now), current, state, now)
    if decision.desired != current: ...   # the caller records the new count; backends act on it

Everything here is a frozen value. The policy never keeps state of its own between calls: what
it must remember (when load went low, when panic ends, when the count last changed) travels in
`AutoscalingState`, which the caller stores per deployment and hands back on the next call. So a
control plane that restarts with a fresh `AutoscalingState()` only forgets how long load has been
low, which delays a scale-down and never causes one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LoadSample:
    """The load on one deployment at one moment, summed over every gateway."""

    at: float
    """Seconds on the caller's clock when the load was read."""
    in_flight: float
    """Requests sent to a replica and not yet answered to their last byte."""
    queued: float
    """Requests held by a gateway waiting for a replica, e.g. during a cold start."""

    @property
    def demand(self) -> float:
        """Requests that want a replica now: in flight plus queued."""
        return self.in_flight + self.queued


@dataclass(frozen=True, slots=True)
class ScalingDecision:
    """How many replicas a deployment should run, and why, in words an operator can read."""

    desired: int
    """Replica count the deployment should have; equal to the current count when nothing changes."""
    reason: str
    """One sentence with the numbers behind the decision, e.g. for an event log or the dashboard."""
    panic: bool = False
    """True while a burst holds the policy in panic mode (scale up at once, never down)."""


@dataclass(frozen=True, slots=True)
class AutoscalingState:
    """What the policy remembers between two decisions for one deployment; start with `AutoscalingState()`."""

    low_since: float | None = None
    """When the load first needed fewer replicas than the current count; None while it does not."""
    low_peak: int = 0
    """Most replicas the load needed at any decision since `low_since`: no scale-down goes below it."""
    panic_until: float | None = None
    """Panic mode lasts until this time; every new burst pushes it later. None: never panicked."""
    last_scaled_at: float | None = None
    """When a decision last changed the replica count; None: never."""
    last_decision: ScalingDecision | None = None
    """The previous decision, for display and for telling a change from a repeat."""

    @property
    def is_low(self) -> bool:
        """Whether a low-load period is being timed towards a scale-down."""
        return self.low_since is not None
