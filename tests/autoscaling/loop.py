"""A fake control loop: feed a load curve to the policy one tick at a time, as the control plane will."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from slipway.autoscaling import AutoscalingPolicy, AutoscalingState, LoadSample, LoadWindow, PolicyConfig
from slipway.autoscaling import ScalingDecision
from slipway.spec.package import Autoscaling

Load = float | Callable[[float], float]


def settings(**changes: object) -> Autoscaling:
    """Autoscaling settings where one replica carries exactly 10 requests (10 x 100%)."""
    values: dict[str, object] = {"min_replica": 0, "max_replica": 20, "concurrency_target": 10,
                                 "target_utilization_percentage": 100, "autoscaling_window": 10.0,
                                 "scale_down_delay": 30.0}
    values.update(changes)
    return Autoscaling.model_validate(values)


def quick(**changes: object) -> PolicyConfig:
    """A policy config whose scale-down is limited only by what a test sets."""
    values: dict[str, object] = {"scale_down_interval": 0.0, "max_scale_down_rate": 1.0}
    values.update(changes)
    return PolicyConfig.model_validate(values)


@dataclass
class Loop:
    """Samples the load, decides and applies the decision every `tick` seconds of a fake clock."""

    policy: AutoscalingPolicy
    current: int
    tick: float = 1.0
    now: float = 0.0
    state: AutoscalingState = field(default_factory=AutoscalingState)
    history: list[tuple[float, int, ScalingDecision]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.start = self.current
        self.window = LoadWindow(max_age=self.policy.settings.autoscaling_window * 2, max_samples=4096)

    def run(self, seconds: float, in_flight: Load = 0.0, queued: Load = 0.0) -> list[int]:
        """Advance `seconds`; return the replica count after each tick."""
        counts = []
        for _ in range(round(seconds / self.tick)):
            self.now += self.tick
            sample = LoadSample(at=self.now, in_flight=_at(in_flight, self.now), queued=_at(queued, self.now))
            self.window.add("d-1", sample)
            decision, self.state = self.policy.decide(self.window.samples("d-1", self.now), self.current,
                                                      self.state, self.now)
            self.current = decision.desired
            self.history.append((self.now, self.current, decision))
            counts.append(self.current)
        return counts

    def changes(self) -> list[tuple[float, int]]:
        """(time, new count) for every tick that changed the count."""
        found: list[tuple[float, int]] = []
        previous = self.start
        for at, count, _ in self.history:
            if count != previous:
                found.append((at, count))
            previous = count
        return found

    @property
    def last(self) -> ScalingDecision:
        return self.history[-1][2]


def _at(load: Load, now: float) -> float:
    return load(now) if callable(load) else load


def loop(current: int, config: PolicyConfig | None = None, **changes: object) -> Loop:
    return Loop(AutoscalingPolicy(settings(**changes), config or quick()), current)
