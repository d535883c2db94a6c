"""`AutoscalingPolicy`: desired replicas from a window of load samples, as pure arithmetic.

One replica is sized for `concurrency_target x target_utilization_percentage / 100` requests in
flight (its *capacity* below). Each decision reads two averages of demand (in flight + queued):

    ──────────── autoscaling_window (60 s) ────────────┬── panic_window (6 s) ──┐
                       stable average                  │      burst average     │ now

and walks these rules, first match wins:

  1. bounds      a count outside [min_replica, max_replica] moves inside at once
  2. no data     no sample in the window: hold (missing data never counts as low load)
  3. cold start  at zero replicas, any demand in the newest sample -> at least 1 at once, more
                 when the burst already needs more
  4. panic       burst >= panic_threshold x what the current replicas are sized for -> scale up at
                 once to the burst's size; for panic_hold after the last burst, never scale down
  5. scale up    stable need > current x (1 + tolerance) -> ceil(stable / capacity) at once
  6. scale down  stable need with headroom, ceil(stable x (1 + tolerance) / capacity), below the
                 current count for scale_down_delay -> step down, at most max_scale_down_rate of
                 the replicas per decision and one step per scale_down_interval, never below the
                 most the load needed while it was low
  7. otherwise   hold

Against flapping (rules 5 and 6): the current count n is kept while the stable need x (in
replicas) stays within ((n - 1) / (1 + tolerance), n x (1 + tolerance)]. A scale-up lands on
ceil(x) and a scale-down on ceil(x x (1 + tolerance)), both inside the new count's band with room
to spare, so load that wobbles by less than tolerance / (1 + tolerance) around any level never
changes the count, and the scale-down delay absorbs the rest.

Scale to zero (`min_replica: 0`) is rule 6 reaching 0: the window average must be exactly zero at
every decision for scale_down_delay, so an idle deployment goes to zero after autoscaling_window
plus scale_down_delay of no requests at all.

`current` is the count the deployment is set to (the last desired count), not the ready count:
replicas still starting already count, so a slow cold start does not scale up twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

from slipway.autoscaling.base import AutoscalingState, LoadSample, ScalingDecision
from slipway.autoscaling.config import PolicyConfig
from slipway.errors import SpecError
from slipway.spec.package import Autoscaling

# Float division can land a hair above an exact boundary (11.2 / 5.6 -> 2.0000000000000004);
# a load exactly at capacity should need exactly that many replicas, not one more.
_EPSILON = 1e-9


def _whole(replicas: float) -> int:
    """Fewest whole replicas that cover a fractional need."""
    return max(0, math.ceil(replicas - _EPSILON))


@dataclass(frozen=True, slots=True)
class _Reading:
    """Demand read from the samples at one decision."""

    stable: float
    """Mean demand over autoscaling_window."""
    burst: float
    """Mean demand over the panic window (0 when it holds no sample)."""
    newest: float
    """Demand in the newest sample of the window."""


class AutoscalingPolicy:
    """Decides one deployment's replica count; cheap to build, so build one per settings change."""

    def __init__(self, settings: Autoscaling, config: PolicyConfig | None = None) -> None:
        self.settings = settings
        self.config = config or PolicyConfig()
        self.capacity = settings.concurrency_target * settings.target_utilization_percentage / 100
        """Requests in flight one replica is sized for."""
        self.panic_window = min(self.config.panic_window, settings.autoscaling_window)
        self.panic_hold = settings.autoscaling_window if self.config.panic_hold is None else self.config.panic_hold

    def decide(self, samples: Sequence[LoadSample], current: int, state: AutoscalingState,
               now: float) -> tuple[ScalingDecision, AutoscalingState]:
        """The replica count for now, and the state to pass to the next call.

        `samples` may hold any history in any order; only those within autoscaling_window before
        `now` (and none after it) count.
        """
        if current < 0:
            raise SpecError(f"current replica count is {current}; pass the count the deployment is set to (>= 0)")
        low, high = self.settings.min_replica, self.settings.max_replica
        if not low <= current <= high:
            target = min(max(current, low), high)
            return self._settle(current, target, state, now,
                                f"{current} replicas is outside min_replica {low} .. max_replica {high}; "
                                f"moving to {target}")
        reading = self._read(samples, now)
        if reading is None:
            return self._settle(current, current, state, now,
                                f"no load sample in the last {self.settings.autoscaling_window:g}s; "
                                f"holding {current}")
        if current == 0:
            return self._from_zero(reading, state, now)
        state = self._note_burst(reading, current, state, now)
        if state.panic_until is not None and now < state.panic_until:
            return self._panic(reading, current, state, now)
        needed = reading.stable / self.capacity
        if needed > current * (1 + self.config.tolerance):
            return self._scale_up(needed, current, state, now)
        return self._scale_down(needed, current, state, now)

    # -- reading the samples -------------------------------------------------------------------

    def _read(self, samples: Sequence[LoadSample], now: float) -> _Reading | None:
        window_start = now - self.settings.autoscaling_window
        in_window = [s for s in samples if window_start < s.at <= now]
        if not in_window:
            return None
        burst_start = now - self.panic_window
        in_burst = [s.demand for s in in_window if s.at > burst_start]
        return _Reading(
            stable=sum(s.demand for s in in_window) / len(in_window),
            burst=sum(in_burst) / len(in_burst) if in_burst else 0.0,
            newest=max(in_window, key=lambda s: s.at).demand,
        )

    # -- the rules -----------------------------------------------------------------------------

    def _from_zero(self, reading: _Reading, state: AutoscalingState,
                   now: float) -> tuple[ScalingDecision, AutoscalingState]:
        if reading.newest <= 0:
            return self._settle(0, 0, state, now, "no demand; staying at zero replicas")
        wanted = max(1, _whole(reading.burst / self.capacity), _whole(reading.stable / self.capacity))
        target = min(wanted, self.settings.max_replica)
        return self._settle(0, target, state, now,
                            f"cold start: {reading.newest:g} requests waiting at zero replicas; "
                            f"starting {target}")

    def _note_burst(self, reading: _Reading, current: int, state: AutoscalingState,
                    now: float) -> AutoscalingState:
        """Start or extend panic mode when the burst average crosses the threshold."""
        if reading.burst >= self.config.panic_threshold * current * self.capacity:
            return replace(state, panic_until=now + self.panic_hold)
        return state

    def _panic(self, reading: _Reading, current: int, state: AutoscalingState,
               now: float) -> tuple[ScalingDecision, AutoscalingState]:
        wanted = max(current, _whole(reading.burst / self.capacity),
                     _whole(reading.stable / self.capacity))
        target = min(wanted, self.settings.max_replica)
        ratio = reading.burst / (current * self.capacity)
        burst = (f"burst of {reading.burst:.1f} requests over {self.panic_window:g}s is {ratio:.1f}x what "
                 f"{current} replicas are sized for")
        if target > current:
            reason = f"panic: {burst}; scaling up to {target}"
        elif wanted > current:
            reason = f"panic: load needs {wanted} replicas; holding at max_replica {current}"
        else:
            left = 0.0 if state.panic_until is None else state.panic_until - now
            reason = f"panic for {left:.0f}s more after a burst ({burst}): holding {current}, no scale-down"
        return self._settle(current, target, state, now, reason, panic=True)

    def _scale_up(self, needed: float, current: int, state: AutoscalingState,
                  now: float) -> tuple[ScalingDecision, AutoscalingState]:
        target = min(_whole(needed), self.settings.max_replica)
        average = f"average load {needed * self.capacity:.1f} over {self.settings.autoscaling_window:g}s"
        if target <= current:
            return self._settle(current, current, state, now,
                                f"{average} needs {needed:.1f} replicas; holding at max_replica {current}")
        return self._settle(current, target, state, now,
                            f"{average} needs {needed:.1f} replicas at {self.capacity:g} each; "
                            f"scaling up from {current} to {target}")

    def _scale_down(self, needed: float, current: int, state: AutoscalingState,
                    now: float) -> tuple[ScalingDecision, AutoscalingState]:
        delay = self.settings.scale_down_delay
        enough = max(self.settings.min_replica,
                     _whole(needed * (1 + self.config.tolerance)))
        if enough >= current:
            return self._settle(current, current, state, now,
                                f"load needs {needed:.1f} of {current} replicas; holding")
        # A low period started for a larger count still holds for this one only while the load
        # never needed this many; after a step down onto its peak, timing starts again.
        if state.low_since is not None and state.low_peak < current:
            low_since, low_peak = state.low_since, max(state.low_peak, enough)
        else:
            low_since, low_peak = now, enough
        waiting = replace(state, low_since=low_since, low_peak=low_peak)
        low_for = now - low_since
        if low_for < delay:
            return self._hold_low(current, waiting,
                                  f"load has needed at most {low_peak} of {current} replicas for {low_for:.0f}s; "
                                  f"scale_down_delay is {delay:g}s")
        since_change = None if state.last_scaled_at is None else now - state.last_scaled_at
        if since_change is not None and since_change < self.config.scale_down_interval:
            return self._hold_low(current, waiting,
                                  f"load has needed at most {low_peak} of {current} replicas; last change "
                                  f"{since_change:.0f}s ago, next step after {self.config.scale_down_interval:g}s")
        step = max(1, math.floor(current * self.config.max_scale_down_rate))
        target = max(low_peak, current - step)
        after = replace(state, low_since=None, low_peak=0) if target == low_peak else waiting
        return self._settle(current, target, after, now,
                            f"load has needed at most {low_peak} of {current} replicas for {low_for:.0f}s "
                            f"(scale_down_delay {delay:g}s); scaling down to {target}",
                            keep_low=True)

    # -- results -------------------------------------------------------------------------------

    def _settle(self, current: int, desired: int, state: AutoscalingState, now: float, reason: str, *,
                panic: bool = False, keep_low: bool = False) -> tuple[ScalingDecision, AutoscalingState]:
        """The decision, with the state it leaves; any rule but a scale-down ends a low period."""
        decision = ScalingDecision(desired=desired, reason=reason, panic=panic)
        after = replace(
            state,
            low_since=state.low_since if keep_low else None,
            low_peak=state.low_peak if keep_low else 0,
            last_scaled_at=now if desired != current else state.last_scaled_at,
            last_decision=decision,
        )
        return decision, after

    def _hold_low(self, current: int, state: AutoscalingState,
                  reason: str) -> tuple[ScalingDecision, AutoscalingState]:
        decision = ScalingDecision(desired=current, reason=reason)
        return decision, replace(state, last_decision=decision)
