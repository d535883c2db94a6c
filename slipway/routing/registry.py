"""Routing policies by name: the name in `slipway.yaml` (`routing:`) picks the class.

    register_policy("my_policy", MyPolicy)   # any zero-argument factory of a RoutingPolicy
    policy = get_policy("least_load")        # a fresh instance: one per deployment
"""

from __future__ import annotations

from typing import Callable

from slipway.errors import SpecError
from slipway.routing.base import RoutingPolicy
from slipway.routing.least_load import LeastLoad
from slipway.routing.round_robin import RoundRobin

PolicyFactory = Callable[[], RoutingPolicy]

_POLICIES: dict[str, PolicyFactory] = {}


def register_policy(name: str, factory: PolicyFactory) -> None:
    """Make `name` resolve to `factory()`; registering a name again replaces it."""
    if not name:
        raise ValueError("a routing policy needs a non-empty name")
    _POLICIES[name] = factory


def get_policy(name: str) -> RoutingPolicy:
    """A new instance of the policy registered as `name`; `SpecError` naming the known ones if none is."""
    factory = _POLICIES.get(name)
    if factory is None:
        known = ", ".join(sorted(_POLICIES)) or "(none)"
        raise SpecError(f"unknown routing policy {name!r}; set routing to one of: {known}", code="unknown_policy")
    return factory()


def known_policies() -> list[str]:
    return sorted(_POLICIES)


register_policy(LeastLoad.name, LeastLoad)
register_policy(RoundRobin.name, RoundRobin)
