"""When each request is released: offsets in seconds from the start of the run. Pure.

    rate    gaps drawn from a gamma distribution with mean 1/request_rate; shape 1 (burstiness
            1) is a Poisson process. request_rate inf releases everything at offset 0, which
            with max_concurrency N is a closed loop of N users.
    trace   the trace's own arrival times divided by trace_speedup.

The first request is released at 0 either way. max_concurrency is applied later, by the runner:
a released request waits for a free slot, so its send time can trail its release time.
"""

from __future__ import annotations

import math
import random

from slipway.bench.traces import TraceRow


def rate_offsets(count: int, request_rate: float, burstiness: float = 1.0, *, seed: int = 0) -> list[float]:
    """`count` release times of a gamma-renewal process with mean rate `request_rate` per second."""
    if math.isinf(request_rate):
        return [0.0] * count
    rng = random.Random(f"arrivals-{seed}")
    # Gamma(shape=k, scale=1/(rate*k)) has mean 1/rate for every k; k alone sets how bursty.
    scale = 1.0 / (request_rate * burstiness)
    offsets, now = [], 0.0
    for _ in range(count):
        offsets.append(now)
        now += rng.gammavariate(burstiness, scale)
    return offsets


def trace_offsets(rows: list[TraceRow], speedup: float = 1.0) -> list[float]:
    """The rows' arrival times, replayed `speedup` times faster."""
    return [row.arrival_s / speedup for row in rows]
