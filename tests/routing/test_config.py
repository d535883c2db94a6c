"""The policies' settings: defaults, bounds, and the load limit."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from slipway.routing import BoundedLoadConfig, KvAwareConfig, LeastLoadConfig, PrefixAwareConfig

MODELS = [LeastLoadConfig, BoundedLoadConfig, PrefixAwareConfig, KvAwareConfig]


@pytest.mark.parametrize("model", MODELS)
def test_every_field_is_described(model):
    missing = [name for name, field in model.model_fields.items() if not field.description]
    assert not missing, f"{model.__name__} fields without a description: {missing}"


@pytest.mark.parametrize("model", MODELS)
def test_unknown_fields_are_refused(model):
    with pytest.raises(ValidationError, match="loadfactor"):
        model(loadfactor=2)


def test_load_limit_is_factor_times_fewest_plus_slack():
    assert BoundedLoadConfig(load_factor=1.5, load_slack=4).load_limit(10) == 19.0
    assert BoundedLoadConfig(load_factor=1.0, load_slack=0).load_limit(3) == 3.0


@pytest.mark.parametrize("bad", [
    {"load_factor": 0.9}, {"load_slack": -1},
])
def test_a_bound_below_least_load_is_refused(bad):
    with pytest.raises(ValidationError):
        BoundedLoadConfig(**bad)


@pytest.mark.parametrize("model, bad", [
    (PrefixAwareConfig, {"chunk_chars": 0}), (PrefixAwareConfig, {"max_entries": 0}),
    (PrefixAwareConfig, {"max_prefix_chars": 0}), (KvAwareConfig, {"load_weight": -1}),
    (KvAwareConfig, {"max_request_blocks": 0}), (KvAwareConfig, {"max_entries": 0}),
    (LeastLoadConfig, {"mode": "random"}),
])
def test_out_of_range_settings_are_refused(model, bad):
    with pytest.raises(ValidationError):
        model(**bad)


def test_configs_are_frozen_so_a_policy_cannot_drift_from_its_settings():
    config = KvAwareConfig()
    with pytest.raises(ValidationError):
        config.load_weight = 1.0  # type: ignore[misc]
