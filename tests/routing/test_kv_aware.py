"""kv_aware: the longest cached prefix run wins unless load outweighs it; the bound always holds."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from slipway.routing import KvAware, KvAwareConfig, ReplicaView, RouteRequest, block_hash_chain

PROMPT = block_hash_chain(list(range(128)), 16)        # 8 blocks
OTHER = block_hash_chain(list(range(1000, 1128)), 16)  # 8 blocks sharing nothing with PROMPT


def view(replica_id: str, in_flight: int, cached: tuple[int, ...] | None = (), healthy: bool = True) -> ReplicaView:
    return ReplicaView(replica_id, f"http://{replica_id}", in_flight, healthy,
                       None if cached is None else frozenset(cached))


def ask(block_hashes: tuple[int, ...]) -> RouteRequest:
    return RouteRequest("d-1", block_hashes=block_hashes)


def policy(**settings) -> KvAware:
    return KvAware(KvAwareConfig(**settings))


def test_the_replica_with_the_longest_cached_prefix_wins():
    replicas = [view("a", 1, PROMPT[:2]), view("b", 1, PROMPT[:6]), view("c", 1, OTHER)]
    assert policy(learn_routed=False).choose(replicas, ask(PROMPT)).replica_id == "b"


def test_only_a_run_from_the_first_block_counts():
    # c holds 7 of the 8 blocks but not the first: none of them is reusable.
    replicas = [view("a", 0, PROMPT[:2]), view("c", 0, PROMPT[1:])]
    routing = policy(learn_routed=False)
    assert routing.cached_run(replicas[1], PROMPT) == 0
    assert routing.choose(replicas, ask(PROMPT)).replica_id == "a"


def test_cost_is_blocks_to_prefill_plus_weighted_load():
    routing = policy(load_weight=4.0, learn_routed=False)
    r0, r1, r2 = view("r0", 3, PROMPT[:6]), view("r1", 0, ()), view("r2", 1, PROMPT)
    assert [routing.cost(r, PROMPT) for r in (r0, r1, r2)] == [14.0, 8.0, 4.0]
    assert routing.choose([r0, r1, r2], ask(PROMPT)).replica_id == "r2"


def test_load_outweighs_a_short_cached_run():
    # a saves 2 blocks of prefill but carries 1 more request, worth 4 blocks: b wins.
    replicas = [view("a", 2, PROMPT[:2]), view("b", 1, ())]
    assert policy(load_weight=4.0, learn_routed=False).choose(replicas, ask(PROMPT)).replica_id == "b"
    # With a light load weight the cache wins instead.
    assert policy(load_weight=1.0, learn_routed=False).choose(replicas, ask(PROMPT)).replica_id == "a"


def test_falls_back_on_load_past_the_bound_even_with_the_whole_prompt_cached():
    replicas = [view("hot", 9, PROMPT), view("cold", 2, ())]
    routing = policy(load_weight=0.0, load_factor=2.0, load_slack=2, learn_routed=False)
    assert routing.choose(replicas, ask(PROMPT)).replica_id == "cold"       # 9 > 2 * 2 + 2
    replicas = [view("hot", 6, PROMPT), view("cold", 2, ())]
    assert routing.choose(replicas, ask(PROMPT)).replica_id == "hot"        # 6 <= 6


def test_ties_go_to_the_less_loaded_then_in_turn():
    routing = policy(load_weight=0.0, learn_routed=False)
    replicas = [view("a", 3, PROMPT[:4]), view("b", 1, PROMPT[:4]), view("c", 1, PROMPT[:4])]
    picks = Counter(routing.choose(replicas, ask(PROMPT)).replica_id for _ in range(10))
    assert picks == {"b": 5, "c": 5}


def test_without_block_hashes_or_reports_it_is_least_load():
    routing = policy()
    replicas = [view("a", 5, None), view("b", 2, None), view("c", 4, None)]
    assert {routing.choose(replicas, RouteRequest("d-1")).replica_id for _ in range(5)} == {"b"}
    assert routing.choose(replicas, ask(PROMPT)).replica_id == "b"  # hashes, but no replica reports a cache


def test_a_burst_with_one_prefix_sticks_before_replicas_report_it():
    routing = policy(load_weight=1.0)
    first = routing.choose([view("a", 0), view("b", 0)], ask(PROMPT)).replica_id
    # Nothing reported yet, and the first request is still in flight on `first`.
    loads = {"a": 1 if first == "a" else 0, "b": 1 if first == "b" else 0}
    second = routing.choose([view("a", loads["a"]), view("b", loads["b"])], ask(PROMPT)).replica_id
    assert second == first
    # Without learning, the second request would go to the idle replica.
    forgetful = policy(load_weight=1.0, learn_routed=False)
    forgetful.choose([view("a", 0), view("b", 0)], ask(PROMPT))
    assert forgetful.choose([view("a", loads["a"]), view("b", loads["b"])], ask(PROMPT)).replica_id != first


def test_only_the_leading_max_request_blocks_count():
    routing = policy(max_request_blocks=2, learn_routed=False)
    replicas = [view("a", 0, PROMPT[:2]), view("b", 0, PROMPT)]
    assert routing.cost(replicas[0], PROMPT[:2]) == routing.cost(replicas[1], PROMPT[:2]) == 0.0
    assert Counter(routing.choose(replicas, ask(PROMPT)).replica_id for _ in range(4)) == {"a": 2, "b": 2}


def test_unhealthy_and_excluded_replicas_are_never_chosen_for_their_cache():
    replicas = [view("a", 0, PROMPT, healthy=False), view("b", 0, PROMPT), view("c", 5, ())]
    routing = policy()
    assert routing.choose(replicas, ask(PROMPT)).replica_id == "b"
    assert routing.choose(replicas, ask(PROMPT), exclude=frozenset({"b"})).replica_id == "c"
    assert routing.choose(replicas, ask(PROMPT), exclude=frozenset({"b", "c"})) is None


blocks = st.lists(st.integers(0, 5), max_size=6).map(tuple)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(st.lists(st.tuples(st.integers(0, 30), blocks), min_size=1, max_size=6), blocks),
                      min_size=1, max_size=8),
       load_factor=st.floats(1.0, 4.0), load_slack=st.integers(0, 8), load_weight=st.floats(0.0, 8.0))
def test_the_chosen_replica_is_never_over_the_bound_and_is_cheapest_within_it(steps, load_factor, load_slack,
                                                                                load_weight):
    routing = policy(load_factor=load_factor, load_slack=load_slack, load_weight=load_weight)
    for replica_states, request_blocks in steps:
        replicas = [view(f"r{i}", load, cached) for i, (load, cached) in enumerate(replica_states)]
        limit = load_factor * min(r.in_flight for r in replicas) + load_slack
        costs = {r.replica_id: routing.cost(r, request_blocks) for r in replicas if r.in_flight <= limit}
        chosen = routing.choose(replicas, ask(request_blocks))
        assert chosen.in_flight <= limit
        assert costs[chosen.replica_id] == min(costs.values())


def test_a_million_routed_prompts_keep_the_routed_blocks_within_max_entries():
    routing = policy(max_entries=500)
    replica = view("a", 0)
    for number in range(1_000_000):
        routing.on_routed(ask((number,)), replica)
    assert len(routing.routed) == 500
