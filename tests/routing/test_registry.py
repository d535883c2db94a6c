"""Policies by name, with settings validated by each policy's config model."""

from __future__ import annotations

import pytest

from slipway.errors import SpecError
from slipway.routing import (KvAware, KvAwareConfig, LeastLoad, LeastLoadConfig, PrefixAware, PrefixAwareConfig,
                             ReplicaView, RouteRequest, RoutingPolicy, config_model_of, get_policy, known_policies,
                             register_policy)

REQUEST = RouteRequest("d-1")


def test_unknown_policy_names_the_known_ones():
    with pytest.raises(SpecError) as caught:
        get_policy("fastest")
    assert "fastest" in caught.value.message
    for name in ("least_load", "round_robin", "prefix_aware", "kv_aware"):
        assert name in caught.value.message


def test_get_policy_returns_a_fresh_instance_per_call():
    assert get_policy("least_load") is not get_policy("least_load")
    assert get_policy("prefix_aware").index is not get_policy("prefix_aware").index


def test_each_name_builds_its_class_with_default_settings():
    assert isinstance(get_policy("least_load"), LeastLoad)
    assert get_policy("least_load").config == LeastLoadConfig()
    assert isinstance(get_policy("prefix_aware"), PrefixAware)
    assert isinstance(get_policy("kv_aware"), KvAware)
    assert config_model_of("kv_aware") is KvAwareConfig and config_model_of("round_robin") is None


def test_settings_from_a_mapping_or_a_model_reach_the_policy():
    policy = get_policy("prefix_aware", {"load_factor": 2.5, "max_entries": 10})
    assert policy.config.load_factor == 2.5 and policy.index.max_entries == 10
    config = KvAwareConfig(load_weight=0.5)
    assert get_policy("kv_aware", config).config is config


def test_bad_settings_name_each_field():
    with pytest.raises(SpecError) as caught:
        get_policy("prefix_aware", {"load_factor": 0.5, "chunk_chars": 0, "typo": 1})
    problems = "\n".join(caught.value.problems)
    assert "load_factor" in problems and "chunk_chars" in problems and "typo" in problems
    assert caught.value.code == "invalid_routing_settings"


def test_settings_for_a_policy_without_a_config_model_are_refused():
    with pytest.raises(SpecError, match="takes no settings"):
        get_policy("round_robin", {"anything": 1})


def test_registered_policy_is_found_by_name():
    class First(RoutingPolicy):
        name = "first_for_test"

        def _choose(self, candidates, request):
            return candidates[0]

    register_policy(First.name, First)
    assert First.name in known_policies()
    replicas = [ReplicaView("a", "u", 0, False), ReplicaView("b", "u", 9, True)]
    assert get_policy(First.name).choose(replicas, REQUEST).replica_id == "b"


def test_a_name_without_a_policy_is_refused():
    with pytest.raises(ValueError):
        register_policy("", LeastLoad)


def test_prefix_aware_config_is_the_bounded_load_one():
    assert PrefixAwareConfig(load_factor=2, load_slack=1).load_limit(3) == 7
