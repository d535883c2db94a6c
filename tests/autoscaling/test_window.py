"""LoadWindow: recent samples per deployment, bounded by age, count and number of deployments."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slipway.autoscaling import LoadSample, LoadWindow
from slipway.errors import SpecError


def sample(at: float, in_flight: float = 1.0) -> LoadSample:
    return LoadSample(at=at, in_flight=in_flight, queued=0.0)


def test_returns_the_samples_within_max_age_oldest_first():
    window = LoadWindow(max_age=10.0)
    for at in (1.0, 5.0, 9.0, 12.0):
        window.add("d-1", sample(at))
    assert [s.at for s in window.samples("d-1", now=12.0)] == [5.0, 9.0, 12.0]  # 1.0 fell out on add
    assert [s.at for s in window.samples("d-1", now=16.0)] == [9.0, 12.0]
    assert [s.at for s in window.samples("d-1", now=9.0)] == [5.0, 9.0]  # nothing after `now`


def test_deployments_are_kept_apart():
    window = LoadWindow(max_age=60.0)
    window.add("d-1", sample(1.0, in_flight=3))
    window.add("d-2", sample(1.0, in_flight=7))
    assert [s.in_flight for s in window.samples("d-1", 1.0)] == [3]
    assert [s.in_flight for s in window.samples("d-2", 1.0)] == [7]
    assert window.samples("d-unknown", 1.0) == ()


def test_an_out_of_order_sample_is_refused():
    window = LoadWindow(max_age=60.0)
    assert window.add("d-1", sample(10.0))
    assert not window.add("d-1", sample(9.0))
    assert window.add("d-1", sample(10.0, in_flight=2))  # same instant is in order
    assert [s.at for s in window.samples("d-1", 10.0)] == [10.0, 10.0]
    assert window.latest("d-1") == sample(10.0, in_flight=2)


def test_each_ring_keeps_at_most_max_samples():
    window = LoadWindow(max_age=1e9, max_samples=100)
    for at in range(10_000):
        window.add("d-1", sample(float(at)))
    kept = window.samples("d-1", 10_000.0)
    assert len(kept) == 100 and kept[0].at == 9_900.0 and kept[-1].at == 9_999.0


def test_the_deployment_updated_longest_ago_goes_first():
    window = LoadWindow(max_age=60.0, max_deployments=3)
    for name in ("a", "b", "c"):
        window.add(name, sample(1.0))
    window.add("a", sample(2.0))  # a is now the most recent
    window.add("d", sample(3.0))
    assert window.deployment_ids() == ["c", "a", "d"]
    assert "b" not in window and len(window) == 3


def test_prune_drops_aged_samples_and_empty_deployments():
    window = LoadWindow(max_age=10.0)
    window.add("old", sample(1.0))
    window.add("live", sample(1.0))
    window.add("live", sample(15.0))
    window.prune(now=20.0)
    assert window.deployment_ids() == ["live"]
    assert window.latest("live") == sample(15.0)


def test_forget_drops_a_deployment():
    window = LoadWindow(max_age=10.0)
    window.add("d-1", sample(1.0))
    window.forget("d-1")
    window.forget("never-seen")
    assert len(window) == 0 and window.latest("d-1") is None


def test_bad_bounds_name_every_problem_and_the_fix():
    with pytest.raises(SpecError) as caught:
        LoadWindow(max_age=0.0, max_samples=0, max_deployments=0)
    assert len(caught.value.problems) == 3
    assert "autoscaling_window" in caught.value.problems[0]


@settings(max_examples=100, deadline=None)
@given(adds=st.lists(st.tuples(st.integers(0, 30), st.floats(0, 1000)), max_size=400))
def test_memory_stays_within_every_bound(adds):
    window = LoadWindow(max_age=50.0, max_samples=8, max_deployments=5)
    for key, at in adds:
        window.add(f"d-{key}", sample(at))
    assert len(window) <= 5
    for deployment_id in window.deployment_ids():
        ring = window._rings[deployment_id]
        assert 1 <= len(ring) <= 8
        assert ring[-1].at - ring[0].at < 50.0
        assert [s.at for s in ring] == sorted(s.at for s in ring)
