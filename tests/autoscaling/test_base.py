"""The values in and out of a decision."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest

from slipway.autoscaling import AutoscalingState, LoadSample, ScalingDecision


def test_demand_is_in_flight_plus_queued():
    assert LoadSample(at=1.0, in_flight=3, queued=4.5).demand == 7.5


def test_a_fresh_state_remembers_nothing():
    state = AutoscalingState()
    assert not state.is_low and state.panic_until is None and state.last_scaled_at is None
    assert AutoscalingState(low_since=3.0).is_low


@pytest.mark.parametrize("value", [LoadSample(1.0, 0, 0), ScalingDecision(1, "why"), AutoscalingState()])
def test_values_are_frozen(value):
    field = next(iter(type(value).__dataclass_fields__))
    with pytest.raises(FrozenInstanceError):
        setattr(value, field, 2)
