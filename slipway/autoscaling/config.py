"""`PolicyConfig`: the knobs of the autoscaling policy that are the operator's, not the package's.

A package's `autoscaling:` block (`slipway.spec.package.Autoscaling`) says what its owner wants:
bounds, concurrency target, window, scale-down delay. These settings say how the policy gets
there without flapping; one `PolicyConfig` usually serves every deployment of a control plane.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PolicyConfig(BaseModel):
    """How the autoscaling policy reacts to bursts, tolerates noise and steps down."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    panic_window: float = Field(
        6.0, gt=0,
        description="Seconds of load averaged to detect a burst. Shorter than autoscaling_window so a burst "
                    "is seen within seconds instead of diluted over the whole window; capped at it.",
    )
    panic_threshold: float = Field(
        2.0, gt=1,
        description="Burst load, as a multiple of what the current replicas are sized for, that enters panic "
                    "mode: scale up at once to the burst's size and never scale down until panic ends.",
    )
    panic_hold: float | None = Field(
        None, ge=0,
        description="Seconds panic mode lasts after the last burst. None: the deployment's autoscaling_window, "
                    "the time the window average needs to take the burst in.",
    )
    tolerance: float = Field(
        0.1, ge=0, lt=1,
        description="Relative dead band against flapping: scale up only when load needs more than "
                    "current x (1 + tolerance) replicas; scale down only to a count that still has this much "
                    "headroom. Load that moves less than tolerance / (1 + tolerance) either way never changes "
                    "the count.",
    )
    max_scale_down_rate: float = Field(
        0.5, gt=0, le=1,
        description="Largest share of the current replicas one decision removes (one replica is always "
                    "allowed), so a long quiet spell steps down instead of dropping to the floor at once.",
    )
    scale_down_interval: float = Field(
        30.0, ge=0,
        description="Fewest seconds between a change in replica count and the next scale-down step, so the "
                    "load settles on the new count before the policy judges it again.",
    )
