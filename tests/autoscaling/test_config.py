"""PolicyConfig: typed, documented, validated."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from slipway.autoscaling import PolicyConfig


def test_defaults():
    config = PolicyConfig()
    assert (config.panic_window, config.panic_threshold, config.panic_hold) == (6.0, 2.0, None)
    assert (config.tolerance, config.max_scale_down_rate, config.scale_down_interval) == (0.1, 0.5, 30.0)


def test_every_field_is_described():
    undocumented = [name for name, field in PolicyConfig.model_fields.items() if not field.description]
    assert undocumented == []


@pytest.mark.parametrize("changes", [
    {"panic_window": 0}, {"panic_threshold": 1.0}, {"tolerance": 1.0}, {"tolerance": -0.1},
    {"max_scale_down_rate": 0}, {"max_scale_down_rate": 1.5}, {"scale_down_interval": -1}, {"panic_hold": -1},
    {"panic_windw": 6},
])
def test_rejects_values_that_cannot_work(changes):
    with pytest.raises(ValidationError) as caught:
        PolicyConfig.model_validate(changes)
    assert caught.value.errors()[0]["loc"] == (next(iter(changes)),)


def test_is_frozen():
    with pytest.raises(ValidationError):
        PolicyConfig().tolerance = 0.5
