"""Pure autoscaling: desired replicas of a deployment from a window of load samples (no I/O, no clock).

    base.py     LoadSample, ScalingDecision, AutoscalingState: the values in and out of a decision
    config.py   PolicyConfig: panic window and threshold, tolerance, scale-down rate and interval
    policy.py   AutoscalingPolicy.decide: the rules, from bounds and cold start to delayed scale-down
    window.py   LoadWindow: recent samples per deployment, bounded by age, count and deployments
"""

from slipway.autoscaling.base import AutoscalingState, LoadSample, ScalingDecision
from slipway.autoscaling.config import PolicyConfig
from slipway.autoscaling.policy import AutoscalingPolicy
from slipway.autoscaling.window import LoadWindow

__all__ = [
    "AutoscalingPolicy", "AutoscalingState", "LoadSample", "LoadWindow", "PolicyConfig", "ScalingDecision",
]
