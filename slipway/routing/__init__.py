"""Pure replica choice: which replica of a deployment serves a request (no I/O, no clock).

    base.py         ReplicaView, RouteRequest, RoutingPolicy: the contract every policy keeps
    least_load.py   fewest in flight, ties in turn (the default)
    round_robin.py  each healthy replica in turn
    registry.py     policies by name: register_policy, get_policy
"""

from slipway.routing.base import ReplicaView, RouteRequest, RoutingPolicy
from slipway.routing.least_load import LeastLoad
from slipway.routing.registry import get_policy, known_policies, register_policy
from slipway.routing.round_robin import RoundRobin

__all__ = [
    "ReplicaView", "RouteRequest", "RoutingPolicy", "LeastLoad", "RoundRobin",
    "get_policy", "known_policies", "register_policy",
]
