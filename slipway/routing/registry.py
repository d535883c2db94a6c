"""Routing policies by name: the name in `slipway.yaml` (`routing:`) picks the class.

    register_policy("my_policy", MyPolicy)                      # any zero-argument factory
    register_policy("tuned", Tuned, config_model=TunedConfig)   # also accepts validated settings
    policy = get_policy("least_load")                           # a fresh instance: one per deployment
    policy = get_policy("prefix_aware", {"load_factor": 2.0})   # settings checked by the config model

    name            class        settings
    round_robin     RoundRobin   -
    least_load      LeastLoad    LeastLoadConfig
    prefix_aware    PrefixAware  PrefixAwareConfig
    kv_aware        KvAware      KvAwareConfig
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from pydantic import BaseModel, ValidationError

from slipway.errors import SpecError
from slipway.routing.base import RoutingPolicy
from slipway.routing.config import KvAwareConfig, LeastLoadConfig, PrefixAwareConfig
from slipway.routing.kv_aware import KvAware
from slipway.routing.least_load import LeastLoad
from slipway.routing.prefix_aware import PrefixAware
from slipway.routing.round_robin import RoundRobin

PolicyFactory = Callable[..., RoutingPolicy]
"""Called with no argument, or with one validated config when the policy has a config model."""

_POLICIES: dict[str, PolicyFactory] = {}
_CONFIG_MODELS: dict[str, type[BaseModel]] = {}


def register_policy(name: str, factory: PolicyFactory, config_model: type[BaseModel] | None = None) -> None:
    """Make `name` resolve to `factory()`, or `factory(config)` for settings; registering again replaces it."""
    if not name:
        raise ValueError("a routing policy needs a non-empty name")
    _POLICIES[name] = factory
    if config_model is None:
        _CONFIG_MODELS.pop(name, None)
    else:
        _CONFIG_MODELS[name] = config_model


def get_policy(name: str, settings: Mapping[str, Any] | BaseModel | None = None) -> RoutingPolicy:
    """A new instance of the policy registered as `name`, tuned by `settings` when given.

    `SpecError` when no policy has that name (naming the known ones), or when the settings do not
    fit the policy's config model (naming each bad field).
    """
    factory = _POLICIES.get(name)
    if factory is None:
        known = ", ".join(sorted(_POLICIES)) or "(none)"
        raise SpecError(f"unknown routing policy {name!r}; set routing to one of: {known}", code="unknown_policy")
    if settings is None:
        return factory()
    config_model = _CONFIG_MODELS.get(name)
    if config_model is None:
        raise SpecError(f"routing policy {name!r} takes no settings; remove them", code="invalid_routing_settings")
    if isinstance(settings, config_model):
        return factory(settings)
    raw = settings.model_dump() if isinstance(settings, BaseModel) else settings
    try:
        config = config_model.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in error['loc']) or '(settings)'}: {error['msg']}"
                    for error in exc.errors()]
        raise SpecError(f"invalid settings for routing policy {name!r}", problems,
                        code="invalid_routing_settings") from None
    return factory(config)


def known_policies() -> list[str]:
    return sorted(_POLICIES)


def config_model_of(name: str) -> type[BaseModel] | None:
    """The settings model of the policy registered as `name`; None when it takes none or is unknown."""
    return _CONFIG_MODELS.get(name)


register_policy(RoundRobin.name, RoundRobin)
register_policy(LeastLoad.name, LeastLoad, LeastLoadConfig)
register_policy(PrefixAware.name, PrefixAware, PrefixAwareConfig)
register_policy(KvAware.name, KvAware, KvAwareConfig)
