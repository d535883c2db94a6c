"""prefix_aware: repeated prefixes stick to one replica while the load bound allows."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from slipway.routing import PrefixAware, PrefixAwareConfig, ReplicaView, RouteRequest

SYSTEM = "system\nYou are a careful assistant who answers in one short paragraph.\n" * 3


def views(*loads: int, unhealthy: tuple[int, ...] = ()) -> list[ReplicaView]:
    return [ReplicaView(f"r{i}", f"http://r{i}", load, i not in unhealthy) for i, load in enumerate(loads)]


def ask(text: str) -> RouteRequest:
    return RouteRequest("d-1", prompt_text=text)


def policy(**settings) -> PrefixAware:
    return PrefixAware(PrefixAwareConfig(chunk_chars=16, **settings))


def test_a_repeated_prompt_goes_to_the_replica_that_took_it_first():
    routing = policy()
    first = routing.choose(views(0, 0, 0), ask(SYSTEM + "user\nhi")).replica_id
    # Others now look busier or idler, but within the bound: the prompt stays put.
    picks = {routing.choose(views(1, 2, 0), ask(SYSTEM + "user\nhi")).replica_id for _ in range(10)}
    assert picks == {first}


def test_prompts_sharing_a_long_prefix_follow_it_and_new_ones_spread():
    routing = policy()
    shared = Counter(routing.choose(views(0, 0, 0), ask(SYSTEM + f"user\nquestion {i}")).replica_id
                     for i in range(30))
    assert len(shared) == 1
    fresh = Counter(routing.choose(views(0, 0, 0), ask(f"{i:04d} " * 8)).replica_id for i in range(30))
    assert fresh == {"r0": 10, "r1": 10, "r2": 10}  # no known prefix: least load, ties in turn


def test_the_longest_known_prefix_wins_over_a_shorter_one():
    routing = policy()
    replicas = views(0, 0)
    routing.choose(replicas, ask(SYSTEM))                          # r? takes the system prompt alone
    deep = routing.choose(replicas, ask(SYSTEM + "user\nsame long question about tides"))
    routing.index.record(routing.prefix_chain(ask(SYSTEM)), "r1" if deep.replica_id == "r0" else "r0")
    # The system prompt alone now points elsewhere; the full conversation still points at `deep`.
    again = routing.choose(replicas, ask(SYSTEM + "user\nsame long question about tides, and more"))
    assert again.replica_id == deep.replica_id


def test_a_short_prefix_every_prompt_shares_does_not_herd_new_conversations():
    routing = policy(min_match_ratio=0.3)
    template = "system\nbe brief\n"  # one 16-character chunk, shared by every conversation below
    first_turns = Counter(routing.choose(views(0, 0, 0), ask(template + f"user\n{i:03d} " * 6)).replica_id
                          for i in range(30))
    assert first_turns == {"r0": 10, "r1": 10, "r2": 10}, "under 30% shared: least load, ties in turn"
    # A next turn shares most of its conversation's prompt, so it follows it.
    holder = routing.choose(views(0, 0, 0), ask(template + "user\n007 " * 6 + "more")).replica_id
    assert {routing.choose(views(0, 0, 0), ask(template + "user\n007 " * 6 + "more, again")).replica_id
            for _ in range(6)} == {holder}


def test_with_min_match_ratio_0_any_known_prefix_is_followed():
    routing = policy(min_match_ratio=0.0)
    template = "system\nbe brief\n"
    assert len({routing.choose(views(0, 0, 0), ask(template + f"user\n{i:03d} " * 6)).replica_id
                for i in range(30)}) == 1


def test_falls_back_to_least_load_when_the_holder_is_over_the_bound():
    routing = policy(load_factor=2.0, load_slack=1, load_weight=0)
    holder = routing.choose(views(0, 0), ask(SYSTEM)).replica_id
    other = "r1" if holder == "r0" else "r0"

    def loads(holder_load: int, other_load: int) -> list[ReplicaView]:
        by_id = {holder: holder_load, other: other_load}
        return views(by_id["r0"], by_id["r1"])

    assert routing.choose(loads(7, 3), ask(SYSTEM)).replica_id == holder      # 7 <= 2 * 3 + 1
    assert routing.choose(loads(8, 3), ask(SYSTEM)).replica_id == other       # 8 > 7: least load
    # The prefix followed the request: the other replica is now where it lives.
    assert routing.choose(loads(0, 0), ask(SYSTEM)).replica_id == other


def test_a_prefix_must_be_worth_the_extra_requests_its_holder_carries():
    routing = policy(load_weight=4)
    short, long = "user\nhello there, tides?\n", SYSTEM + "user\nwhat moves the tides twice a day?\n"
    holder_short = routing.choose(views(0, 0), ask(short)).replica_id   # 2 chunks of 16 characters
    holder_long = routing.choose(views(0, 0), ask(long)).replica_id     # 16 chunks
    assert holder_short != holder_long, "two new conversations, spread by load in turn"

    def loads(holder: str, holder_load: int) -> list[ReplicaView]:
        return views(holder_load if holder == "r0" else 0, holder_load if holder == "r1" else 0)

    assert routing.choose(loads(holder_short, 1), ask(short)).replica_id != holder_short, \
        "2 matched chunks do not pay for 1 more request in flight (4 chunks): the idle replica takes it"
    assert routing.choose(loads(holder_long, 4), ask(long)).replica_id == holder_long, \
        "16 matched chunks pay for 4 more requests (16 chunks): the conversation stays"
    assert routing.choose(loads(holder_long, 5), ask(long)).replica_id != holder_long, "but not for 5"


def test_an_unhealthy_or_excluded_holder_is_passed_over():
    routing = policy()
    holder = routing.choose(views(0, 0), ask(SYSTEM)).replica_id
    index = int(holder[1:])
    assert routing.choose(views(0, 0, unhealthy=(index,)), ask(SYSTEM)).replica_id != holder
    assert routing.choose(views(0, 0), ask(SYSTEM), exclude=frozenset({"r0", "r1"})) is None


def test_prompt_key_is_used_when_there_is_no_text_and_nothing_is_least_load():
    routing = policy()
    first = routing.choose(views(0, 0, 0), RouteRequest("d-1", prompt_key="k-42")).replica_id
    assert {routing.choose(views(0, 0, 0), RouteRequest("d-1", prompt_key="k-42")).replica_id
            for _ in range(6)} == {first}
    busier = views(*[3 if f"r{i}" == first else 0 for i in range(3)])
    assert routing.choose(busier, RouteRequest("d-1", prompt_key="k-42")).replica_id == first, \
        "a key has no size to weigh against load: within the bound it stays"
    assert routing.choose(views(4, 1, 3), RouteRequest("d-1")).replica_id == "r1"
    assert len(routing.index) == 1


loads = st.lists(st.integers(0, 30), min_size=1, max_size=6)
prompts = st.sampled_from(["", "a" * 20, "a" * 40, "a" * 20 + "b" * 20, "b" * 50])


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(loads, prompts), min_size=1, max_size=12),
       load_factor=st.floats(1.0, 4.0), load_slack=st.integers(0, 8))
def test_the_chosen_replica_is_never_over_the_load_bound(steps, load_factor, load_slack):
    routing = policy(load_factor=load_factor, load_slack=load_slack)
    for in_flight, prompt in steps:
        replicas = views(*in_flight)
        chosen = routing.choose(replicas, ask(prompt))
        assert chosen.in_flight <= load_factor * min(in_flight) + load_slack


def test_a_million_distinct_prompts_keep_the_index_within_max_entries():
    routing = PrefixAware(PrefixAwareConfig(chunk_chars=8, max_prefix_chars=8, max_entries=500))
    replica = ReplicaView("r0", "http://r0", 0, True)
    for number in range(1_000_000):   # the learning path, where memory would grow
        routing.on_routed(ask(str(number)), replica)
        if number % 100_000 == 0:
            assert len(routing.index) <= 500
    assert len(routing.index) == 500
    # And through choose, which hashes and looks up as well.
    for number in range(20_000):
        routing.choose(views(0, 0), ask(f"p{number}"))
    assert len(routing.index) == 500
