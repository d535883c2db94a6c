"""Pure replica choice: which replica of a deployment serves a request (no I/O, no clock).

    base.py          ReplicaView, RouteRequest, RoutingPolicy: the contract every policy keeps
    config.py        typed settings of each policy, and the load bound of the cache-aware ones
    round_robin.py   each healthy replica in turn
    least_load.py    fewest in flight: exact scan, ties in turn (the default), or two random choices
    prefix_aware.py  where the prompt's longest known text prefix went, within the load bound
    kv_aware.py      fewest blocks to prefill plus weighted load, from replicas' cached KV blocks
    prefix_index.py  PrefixIndex: LRU-bounded prefix hash -> replica map
    hashing.py       block_hash_chain (the engine's KV block hashes), text_chunk_chain
    prompt.py        prompt_text: a request body's prompt as one string
    registry.py      policies by name: register_policy, get_policy
"""

from slipway.routing.base import ReplicaView, RouteRequest, RoutingPolicy
from slipway.routing.config import BoundedLoadConfig, KvAwareConfig, LeastLoadConfig, PrefixAwareConfig
from slipway.routing.hashing import HASH_MASK, block_hash_chain, text_chunk_chain
from slipway.routing.kv_aware import KvAware
from slipway.routing.least_load import LeastLoad
from slipway.routing.prefix_aware import PrefixAware
from slipway.routing.prefix_index import PrefixIndex, PrefixMatch
from slipway.routing.prompt import prompt_text
from slipway.routing.registry import config_model_of, get_policy, known_policies, register_policy
from slipway.routing.round_robin import RoundRobin

__all__ = [
    "ReplicaView", "RouteRequest", "RoutingPolicy",
    "BoundedLoadConfig", "KvAwareConfig", "LeastLoadConfig", "PrefixAwareConfig",
    "HASH_MASK", "block_hash_chain", "text_chunk_chain", "prompt_text",
    "KvAware", "LeastLoad", "PrefixAware", "RoundRobin", "PrefixIndex", "PrefixMatch",
    "config_model_of", "get_policy", "known_policies", "register_policy",
]
