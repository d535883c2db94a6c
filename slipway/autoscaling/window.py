"""`LoadWindow`: the recent load samples of every deployment, bounded in memory.

    window = LoadWindow(max_age=120.0)
    window.add("d-1", LoadSample(at=now, in_flight=12, queued=0))
    policy.decide(window.samples("d-1", now), current, state, now)

One ring buffer per deployment id, bounded three ways: samples older than `max_age` (measured from
the newest one) fall out, each ring keeps at most `max_samples`, and at most `max_deployments`
rings are kept, the one updated longest ago going first. Set `max_age` to at least the longest
`autoscaling_window` in use; the policy reads only the part its own window covers.

Samples arrive in time order per deployment; one older than the newest kept is refused (`add`
returns False), so a clock that steps back cannot reorder the window.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from slipway.autoscaling.base import LoadSample
from slipway.errors import SpecError


class LoadWindow:
    """Recent `LoadSample`s per deployment id; a plain data structure, time passed in."""

    def __init__(self, *, max_age: float, max_samples: int = 1024, max_deployments: int = 10_000) -> None:
        problems = []
        if not max_age > 0:
            problems.append(f"max_age is {max_age!r}; give the seconds of history to keep, at least the "
                            "longest autoscaling_window")
        if max_samples < 1:
            problems.append(f"max_samples is {max_samples!r}; give at least 1")
        if max_deployments < 1:
            problems.append(f"max_deployments is {max_deployments!r}; give at least 1")
        if problems:
            raise SpecError("invalid load window", problems, code="invalid_load_window")
        self.max_age = max_age
        self.max_samples = max_samples
        self.max_deployments = max_deployments
        self._rings: OrderedDict[str, deque[LoadSample]] = OrderedDict()

    def add(self, deployment_id: str, sample: LoadSample) -> bool:
        """Keep `sample` as the newest of its deployment; False (and nothing kept) when it is out of order."""
        ring = self._rings.get(deployment_id)
        if ring is None:
            if len(self._rings) >= self.max_deployments:
                self._rings.popitem(last=False)
            ring = self._rings[deployment_id] = deque(maxlen=self.max_samples)
        elif ring and sample.at < ring[-1].at:
            return False
        ring.append(sample)
        self._rings.move_to_end(deployment_id)
        self._drop_before(ring, sample.at - self.max_age)
        return True

    def samples(self, deployment_id: str, now: float) -> tuple[LoadSample, ...]:
        """The deployment's samples within `max_age` before `now`, oldest first; empty when unknown."""
        ring = self._rings.get(deployment_id)
        if ring is None:
            return ()
        start = now - self.max_age
        return tuple(s for s in ring if start < s.at <= now)

    def latest(self, deployment_id: str) -> LoadSample | None:
        """The newest sample kept for the deployment, however old; None when there is none."""
        ring = self._rings.get(deployment_id)
        return ring[-1] if ring else None

    def forget(self, deployment_id: str) -> None:
        """Drop a deployment's samples, e.g. when it is deactivated; unknown ids are ignored."""
        self._rings.pop(deployment_id, None)

    def prune(self, now: float) -> None:
        """Drop samples older than `max_age` before `now`, and deployments left with none."""
        for deployment_id in list(self._rings):
            ring = self._rings[deployment_id]
            self._drop_before(ring, now - self.max_age)
            if not ring:
                del self._rings[deployment_id]

    def deployment_ids(self) -> list[str]:
        """Ids with samples kept, updated longest ago first."""
        return list(self._rings)

    def __len__(self) -> int:
        return len(self._rings)

    def __contains__(self, deployment_id: object) -> bool:
        return deployment_id in self._rings

    @staticmethod
    def _drop_before(ring: deque[LoadSample], cutoff: float) -> None:
        while ring and ring[0].at <= cutoff:
            ring.popleft()
