"""least_load: the exact scan with ties in turn, and power of two choices."""

from __future__ import annotations

import random
from collections import Counter

from slipway.routing import LeastLoad, LeastLoadConfig, ReplicaView, RouteRequest

REQUEST = RouteRequest("d-1")


def views(*loads: int, unhealthy: tuple[int, ...] = ()) -> list[ReplicaView]:
    return [ReplicaView(f"r{i}", f"http://r{i}", load, i not in unhealthy) for i, load in enumerate(loads)]


def test_picks_the_replica_with_fewest_in_flight():
    assert LeastLoad().choose(views(5, 2, 7), REQUEST).replica_id == "r1"


def test_equal_replicas_share_the_load_in_turn():
    policy = LeastLoad()
    picks = Counter(policy.choose(views(0, 0, 0), REQUEST).replica_id for _ in range(300))
    assert picks == {"r0": 100, "r1": 100, "r2": 100}


def test_ties_rotate_only_among_the_least_loaded():
    policy = LeastLoad()
    picks = {policy.choose(views(1, 4, 1), REQUEST).replica_id for _ in range(10)}
    assert picks == {"r0", "r2"}


def test_skips_unhealthy_and_excluded_even_when_least_loaded():
    policy = LeastLoad()
    replicas = views(0, 3, 9, unhealthy=(0,))
    assert policy.choose(replicas, REQUEST).replica_id == "r1"
    assert policy.choose(replicas, REQUEST, exclude=frozenset({"r1"})).replica_id == "r2"
    assert policy.choose(replicas, REQUEST, exclude=frozenset({"r1", "r2"})) is None


def two_choices(seed: int = 7) -> LeastLoad:
    return LeastLoad(LeastLoadConfig(mode="two_choices", seed=seed))


def test_two_choices_never_takes_the_busier_of_its_two_samples():
    # With loads 0, 10, 20 the busiest (r2) can only win if sampled with itself: never.
    policy = two_choices()
    picks = Counter(policy.choose(views(0, 10, 20), REQUEST).replica_id for _ in range(600))
    assert "r2" not in picks
    # r0 loses only when it is not sampled (1 pair in 3): about 400 / 200.
    assert 340 <= picks["r0"] <= 460 and picks["r0"] + picks["r1"] == 600


def test_two_choices_is_reproducible_with_a_seed_or_an_injected_rng():
    replicas = views(3, 3, 3, 3, 3)

    def run(policy: LeastLoad) -> list[str]:
        return [policy.choose(replicas, REQUEST).replica_id for _ in range(50)]

    seeded = run(two_choices(seed=1))
    assert run(two_choices(seed=1)) == seeded
    assert run(LeastLoad(LeastLoadConfig(mode="two_choices"), rng=random.Random(1))) == seeded
    assert run(two_choices(seed=2)) != seeded
    assert len(set(seeded)) == 5  # equal loads: every replica gets some


def test_two_choices_keeps_a_fleet_balanced_as_requests_arrive():
    # Requests arrive and never finish: each choice adds one in flight. A full scan would keep the
    # spread at 1; two random choices keep it small too (log log n), where one random choice would not.
    policy = two_choices(seed=3)
    loads = [0] * 10
    for _ in range(2000):
        chosen = policy.choose(views(*loads), REQUEST)
        loads[int(chosen.replica_id[1:])] += 1
    assert max(loads) - min(loads) <= 4


def test_two_choices_skips_unhealthy_and_excluded_and_handles_few_candidates():
    policy = two_choices()
    replicas = views(0, 3, 9, unhealthy=(0,))
    assert {policy.choose(replicas, REQUEST, exclude=frozenset({"r1"})).replica_id for _ in range(20)} == {"r2"}
    assert {policy.choose(replicas, REQUEST).replica_id for _ in range(20)} == {"r1"}
    assert policy.choose(replicas, REQUEST, exclude=frozenset({"r1", "r2"})) is None


def test_exact_is_the_default_mode():
    assert LeastLoad().config.mode == "exact"
