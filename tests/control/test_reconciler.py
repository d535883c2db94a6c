"""The reconciler: `plan` and `remember` with a fake clock and no processes, then `Reconciler` driving a
real LocalBackend with `python -m slipway.server` replicas (crash, backoff, failure, adoption, shutdown)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

import pytest

from slipway.backends import LocalBackend
from slipway.control.reconciler import (
    Action, BackoffPolicy, DesiredDeployment, Memory, ReconcileReport, Reconciler, plan, remember,
)
from slipway.spec.replica import ReplicaObservation, ReplicaState
from tests.backends.support import ECHO, FAILING_MODEL, assert_no_leftovers, end_everything, pid_alive, write_package

READY, STARTING, CRASHED = ReplicaState.READY, ReplicaState.STARTING, ReplicaState.CRASHED
FAILED, STOPPED, DRAINING = ReplicaState.FAILED, ReplicaState.STOPPED, ReplicaState.DRAINING


def want(replicas: int, deployment_id: str = "dep", package_dir: str = "/pkg") -> DesiredDeployment:
    return DesiredDeployment(deployment_id=deployment_id, replicas=replicas, package_dir=package_dir, env={})


def replica(replica_id: str, state: ReplicaState, deployment_id: str = "dep", started_at: float = 0.0,
            ) -> ReplicaObservation:
    return ReplicaObservation(replica_id=replica_id, deployment_id=deployment_id, state=state, started_at=started_at)


def summary(actions: list[Action]) -> list[tuple[str, str | None]]:
    return [(a.kind, a.replica_id) for a in actions]


# plan: pure decisions --------------------------------------------------------------------------
def test_starts_the_missing_replicas():
    actions = plan([want(3)], [replica("r-1", READY)], now=0.0)
    assert summary(actions) == [("start", None), ("start", None)]
    assert all(a.desired == want(3) and a.prior_crashes == 0 for a in actions)


def test_adopted_replicas_count_so_nothing_is_duplicated():
    # A fresh reconciler (empty memory) over what a restarted backend adopted.
    adopted = [replica("r-1", READY), replica("r-2", STARTING)]
    assert plan([want(2)], adopted, now=1000.0, memory=Memory()) == []


def test_stops_extra_replicas_not_ready_first_then_newest():
    observed = [replica("r-old", READY, started_at=1), replica("r-new", READY, started_at=3),
                replica("r-loading", STARTING, started_at=0), replica("r-mid", READY, started_at=2)]
    assert summary(plan([want(2)], observed, now=10)) == [("stop", "r-loading"), ("stop", "r-new")]
    assert summary(plan([want(0)], observed, now=10)) == [
        ("stop", "r-loading"), ("stop", "r-new"), ("stop", "r-mid"), ("stop", "r-old")]


def test_replicas_being_stopped_are_neither_counted_nor_stopped_again():
    observed = [replica("r-1", READY), replica("r-going", DRAINING)]
    assert plan([want(1)], observed, now=0, memory=Memory(stopping=frozenset({"r-going"}))) == []


def test_a_replica_draining_on_its_own_is_stopped_and_replaced():
    actions = plan([want(1)], [replica("r-1", DRAINING)], now=0)
    assert summary(actions) == [("stop", "r-1"), ("start", None)]


def test_stopped_replicas_are_forgotten():
    assert summary(plan([want(1)], [replica("r-1", READY), replica("r-2", STOPPED)], now=0)) == [("forget", "r-2")]


def test_every_replica_of_an_undesired_deployment_is_stopped_or_forgotten():
    observed = [replica("r-ready", READY, "gone"), replica("r-crashed", CRASHED, "gone"),
                replica("r-failed", FAILED, "gone"), replica("r-stopped", STOPPED, "gone"),
                replica("r-draining", DRAINING, "gone"), replica("r-kept", READY, "dep")]
    actions = plan([want(1, "dep")], observed, now=0, memory=Memory(stopping=frozenset({"r-draining"})))
    assert sorted(summary(actions)) == [("forget", "r-crashed"), ("forget", "r-failed"), ("forget", "r-stopped"),
                                        ("stop", "r-ready")]
    assert all(a.deployment_id == "gone" and "no longer desired" in a.reason for a in actions)


def test_failed_replicas_are_never_restarted_and_block_new_starts():
    assert plan([want(2)], [replica("r-failed", FAILED), replica("r-ok", READY)], now=1e6) == []
    actions = plan([want(2)], [replica("r-failed", FAILED), replica("r-crashed", CRASHED)], now=1e6)
    assert summary(actions) == [("forget", "r-crashed")]


def test_a_crashed_replica_not_needed_any_more_is_forgotten_at_once():
    observed = [replica("r-ok", READY), replica("r-crashed", CRASHED)]
    assert summary(plan([want(1)], observed, now=0, memory=Memory(crashed_at={"r-crashed": 0}))) == [
        ("forget", "r-crashed")]


def test_backoff_delay_doubles_up_to_the_max():
    policy = BackoffPolicy(initial=0.5, max=3.0)
    assert [policy.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


class FakeWorld:
    """Replicas that obey the actions at once; `crash()` kills the live one. Drives remember + plan."""

    def __init__(self, desired: DesiredDeployment, policy: BackoffPolicy) -> None:
        self.desired, self.policy = desired, policy
        self.replicas: dict[str, ReplicaObservation] = {}
        self.memory = Memory()
        self.started_at: list[float] = []

    def tick(self, now: float) -> None:
        observed = list(self.replicas.values())
        self.memory = remember(self.memory, observed, now, self.policy)
        for action in plan([self.desired], observed, now, self.memory, self.policy):
            if action.kind == "forget":
                del self.replicas[action.replica_id]
                self.memory = self.memory.without(action.replica_id)
            elif action.kind == "start":
                replica_id = f"r-{len(self.started_at)}"
                self.started_at.append(now)
                self.replicas[replica_id] = replica(replica_id, READY, started_at=now)
                self.memory = Memory(prior_crashes={**self.memory.prior_crashes, replica_id: action.prior_crashes},
                                     crashed_at=self.memory.crashed_at, ready_since=self.memory.ready_since)

    def crash(self) -> None:
        for replica_id, seen in self.replicas.items():
            if seen.state == READY:
                self.replicas[replica_id] = seen.model_copy(update={"state": CRASHED})

    def run(self, start: float, end: float, step: float = 0.25, crash_when: Callable[[float], bool] = lambda t: False):
        now = start
        while now <= end:
            if crash_when(now):
                self.crash()
            self.tick(now)
            now = round(now + step, 6)


def test_crash_backoff_doubles_per_crash_in_a_row_up_to_the_max():
    world = FakeWorld(want(1), BackoffPolicy(initial=0.5, max=2.0, reset_after=60))
    world.tick(0.0)
    assert world.started_at == [0.0]
    # Each new replica crashes right after it starts; the slot waits 0.5, 1, 2, 2, 2 seconds.
    world.run(0.25, 12.0, crash_when=lambda now: True)
    assert world.started_at == [0.0, 0.75, 2.0, 4.25, 6.5, 8.75, 11.0]


def test_crash_count_resets_after_a_replica_stays_ready_long_enough():
    world = FakeWorld(want(1), BackoffPolicy(initial=0.5, max=30.0, reset_after=10))
    world.tick(0.0)
    world.run(0.25, 5.0, crash_when=lambda now: now in (0.25, 1.0, 2.5))  # three crashes in a row
    assert world.started_at == [0.0, 0.75, 2.0, 4.5]
    world.run(5.25, 20.0)  # r-3 ready from 4.5: past reset_after at 14.5
    world.run(20.25, 21.0, crash_when=lambda now: now == 20.25)
    assert world.started_at[-1] == 20.75  # back to the initial 0.5s, not 8s


def test_without_a_reset_the_next_crash_waits_longer():
    world = FakeWorld(want(1), BackoffPolicy(initial=0.5, max=30.0, reset_after=10))
    world.tick(0.0)
    world.run(0.25, 3.0, crash_when=lambda now: now in (0.25, 1.0, 2.5))
    world.run(3.25, 8.0)  # r-3 ready from 4.5, crashes before reset_after
    world.run(8.25, 20.0, crash_when=lambda now: now == 8.25)
    assert world.started_at[-1] == 8.25 + 4.0


def test_remember_drops_replicas_that_are_gone():
    memory = Memory(prior_crashes={"r-1": 2, "r-gone": 1}, crashed_at={"r-gone": 5.0},
                    ready_since={"r-gone": 1.0}, stopping=frozenset({"r-gone"}))
    remembered = remember(memory, [replica("r-1", READY)], 10.0, BackoffPolicy())
    assert remembered == Memory(prior_crashes={"r-1": 2}, crashed_at={}, ready_since={"r-1": 10.0})


# Reconciler over real replica processes --------------------------------------------------------
@pytest.fixture
def replica_home(tmp_path):
    return tmp_path / "slipway-home"


@pytest.fixture
async def local_backends(replica_home):
    """new() -> a LocalBackend on replica_home; every replica is ended and checked for leaks after."""
    made: list[LocalBackend] = []

    def new() -> LocalBackend:
        made.append(LocalBackend(replica_home, health_timeout=2.0))
        return made[-1]

    yield new
    await end_everything(made)
    assert_no_leftovers(replica_home)


async def tick_until(reconciler: Reconciler, desired: list[DesiredDeployment], now: float,
                     done: Callable[[ReconcileReport], bool], timeout: float = 15.0) -> ReconcileReport:
    deadline = time.monotonic() + timeout
    while True:
        report = await reconciler.tick(desired, now)
        if done(report):
            return report
        assert time.monotonic() < deadline, f"timed out; last report: {report}"
        await asyncio.sleep(0.05)


def states(report: ReconcileReport) -> list[str]:
    return sorted(r.state.value for r in report.replicas)


async def test_crashed_replica_is_replaced_after_the_backoff_then_scaled_down(local_backends):
    reconciler = Reconciler(local_backends(), backoff_initial=0.5, drain_timeout=5)
    await reconciler.start()
    desired = [want(2, package_dir=str(ECHO))]
    first = await reconciler.tick(desired, 0.0)
    assert states(first) == ["starting", "starting"] and first.changed and first.failed == {}
    ready = await tick_until(reconciler, desired, 0.0, lambda r: states(r) == ["ready", "ready"])
    assert (await reconciler.tick(desired, 0.0)).changed is False

    victim = ready.replicas[0]
    os.kill(victim.pid, signal.SIGKILL)
    crashed = await tick_until(reconciler, desired, 10.0, lambda r: CRASHED in {x.state for x in r.replicas})
    assert states(crashed) == ["crashed", "ready"] and crashed.changed
    assert states(await reconciler.tick(desired, 10.4)) == ["crashed", "ready"]  # still backing off
    replaced = await reconciler.tick(desired, 10.5)
    assert victim.replica_id not in {r.replica_id for r in replaced.replicas}
    assert states(replaced) == ["ready", "starting"]
    await tick_until(reconciler, desired, 10.5, lambda r: states(r) == ["ready", "ready"])

    one = [want(1, package_dir=str(ECHO))]
    scaled = await tick_until(reconciler, one, 11.0, lambda r: states(r) == ["ready"])
    survivor = scaled.replicas[0]
    assert pid_alive(survivor.pid)
    gone = await tick_until(reconciler, [], 12.0, lambda r: r.replicas == [])
    assert gone.changed and not pid_alive(survivor.pid)


async def test_a_replica_is_reported_draining_for_the_stop_grace_before_it_is_signalled(local_backends):
    reconciler = Reconciler(local_backends(), stop_grace=1.5, drain_timeout=5)
    await reconciler.start()
    two = [want(2, package_dir=str(ECHO))]
    await tick_until(reconciler, two, 0.0, lambda r: states(r) == ["ready", "ready"])

    one = [want(1, package_dir=str(ECHO))]
    stopping_since = time.monotonic()
    first = await reconciler.tick(one, 1.0)
    assert states(first) == ["draining", "ready"] and first.changed
    victim = next(r for r in first.replicas if r.state == DRAINING)
    # Still serving, unsignalled, and never reported ready again while its grace runs: the
    # gateways drop it from routing before it starts refusing requests.
    for now in (1.1, 1.2):
        report = await reconciler.tick(one, now)
        assert states(report) == ["draining", "ready"]
        assert next(r for r in report.replicas if r.replica_id == victim.replica_id).state == DRAINING
    assert pid_alive(victim.pid)
    await tick_until(reconciler, one, 2.0, lambda r: states(r) == ["ready"])
    assert time.monotonic() - stopping_since >= 1.5 and not pid_alive(victim.pid)
    await reconciler.shutdown(stop_replicas=True)


async def test_shutdown_stops_replicas_still_in_their_stop_grace_at_once(local_backends, replica_home):
    reconciler = Reconciler(local_backends(), stop_grace=30)
    await reconciler.start()
    ready = await tick_until(reconciler, [want(2, package_dir=str(ECHO))], 0.0,
                             lambda r: states(r) == ["ready", "ready"])
    await reconciler.tick([want(1, package_dir=str(ECHO))], 1.0)
    started = time.monotonic()
    await reconciler.shutdown(stop_replicas=True)
    assert time.monotonic() - started < 10
    assert not any(pid_alive(r.pid) for r in ready.replicas)
    assert list((replica_home / "run" / "replicas").iterdir()) == []


async def test_a_failed_load_is_reported_and_never_restarted(local_backends, tmp_path):
    broken = write_package(tmp_path / "broken", "broken", FAILING_MODEL)
    reconciler = Reconciler(local_backends(), backoff_initial=0.5)
    await reconciler.start()
    desired = [want(2, "dep-broken", str(broken))]
    report = await tick_until(reconciler, desired, 0.0, lambda r: "dep-broken" in r.failed)
    reason = report.failed["dep-broken"]
    assert "Traceback (most recent call last)" in reason and "RuntimeError: weights are corrupt" in reason
    failed_ids = {r.replica_id for r in report.replicas}
    for now in (100.0, 200.0, 300.0):  # far past any backoff
        later = await reconciler.tick(desired, now)
        assert "dep-broken" in later.failed
        assert {r.replica_id for r in later.replicas} <= failed_ids
        assert all(r.state in (FAILED, STARTING) for r in later.replicas)
    await tick_until(reconciler, desired, 400.0, lambda r: states(r) == ["failed", "failed"])
    cleared = await reconciler.tick([], 500.0)
    assert cleared.replicas == [] and cleared.failed == {}


async def test_a_restarted_control_plane_adopts_replicas_without_duplicates(local_backends, replica_home):
    desired = [want(2, package_dir=str(ECHO))]
    before = Reconciler(local_backends())
    await before.start()
    first = await tick_until(before, desired, 0.0, lambda r: states(r) == ["ready", "ready"])
    await before.shutdown(stop_replicas=False)
    pids = sorted(r.pid for r in first.replicas)
    assert all(pid_alive(pid) for pid in pids)

    after = Reconciler(local_backends())
    await after.start()
    for now in (0.0, 1.0, 2.0):
        report = await after.tick(desired, now)
        assert sorted(r.pid for r in report.replicas) == pids and states(report) == ["ready", "ready"]

    await after.shutdown(stop_replicas=True)
    assert not any(pid_alive(pid) for pid in pids)
    assert list((replica_home / "run" / "replicas").iterdir()) == []


async def test_one_deployment_that_cannot_start_does_not_stop_the_tick(local_backends, tmp_path):
    reconciler = Reconciler(local_backends())
    await reconciler.start()
    desired = [want(1, "dep-missing", str(tmp_path / "no-such-package")), want(1, "dep-echo", str(ECHO))]
    report = await reconciler.tick(desired, 0.0)
    assert [(r.deployment_id, r.state) for r in report.replicas] == [("dep-echo", STARTING)]
    await reconciler.shutdown(stop_replicas=True)


def test_settings_are_checked(tmp_path):
    backend = LocalBackend(tmp_path)
    with pytest.raises(ValueError, match="backoff_initial <= backoff_max"):
        Reconciler(backend, backoff_initial=5, backoff_max=1)
    with pytest.raises(ValueError, match="failure_log_lines"):
        Reconciler(backend, failure_log_lines=0)
    with pytest.raises(ValueError, match="stop_grace"):
        Reconciler(backend, stop_grace=-1)
