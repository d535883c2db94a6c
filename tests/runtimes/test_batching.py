"""slipway.runtimes.batching: concurrent submits coalesced into bounded batches."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from slipway.runtimes.batching import MicroBatcher


class Squarer:
    """A batch function that records the batches it saw and can be held back."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, items: list[int]) -> list[int]:
        self.gate.wait(5)
        if any(item < 0 for item in items):
            raise ValueError(f"negative input in {items}")
        self.batches.append(list(items))
        return [item * item for item in items]


@pytest.fixture
def executor():
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


async def test_results_come_back_in_order(executor):
    squarer = Squarer()
    batcher = MicroBatcher(squarer, max_batch_size=4, max_queued=100, executor=executor)
    assert await batcher.submit([1, 2, 3]) == [1, 4, 9]
    await batcher.close()


async def test_concurrent_submits_share_batches_of_at_most_max(executor):
    squarer = Squarer()
    batcher = MicroBatcher(squarer, max_batch_size=4, max_queued=100, executor=executor)
    squarer.gate.clear()
    first = asyncio.create_task(batcher.submit([0]))  # occupies the worker while the rest queue up
    await asyncio.sleep(0.05)
    rest = [asyncio.create_task(batcher.submit([i, i + 100])) for i in range(1, 6)]
    await asyncio.sleep(0.05)
    squarer.gate.set()
    assert await first == [0]
    assert [await task for task in rest] == [[i * i, (i + 100) ** 2] for i in range(1, 6)]
    assert squarer.batches[0] == [0]
    assert all(len(batch) <= 4 for batch in squarer.batches)
    # Ten queued items from five callers went in three batches (4 + 4 + 2), not five.
    assert [len(batch) for batch in squarer.batches[1:]] == [4, 4, 2]
    stats = batcher.stats()
    assert stats["batches_total"] == 4 and stats["inputs_total"] == 11 and stats["waiting"] == 0
    await batcher.close()


async def test_a_failing_batch_fails_its_callers_and_the_batcher_goes_on(executor):
    squarer = Squarer()
    batcher = MicroBatcher(squarer, max_batch_size=8, max_queued=100, executor=executor)
    with pytest.raises(ValueError, match="negative input"):
        await batcher.submit([-1])
    assert await batcher.submit([3]) == [9]
    await batcher.close()


async def test_cancelled_callers_items_are_skipped(executor):
    squarer = Squarer()
    batcher = MicroBatcher(squarer, max_batch_size=8, max_queued=100, executor=executor)
    squarer.gate.clear()
    busy = asyncio.create_task(batcher.submit([1]))
    await asyncio.sleep(0.05)
    abandoned = asyncio.create_task(batcher.submit([7, 8]))
    await asyncio.sleep(0.01)
    abandoned.cancel()
    kept = asyncio.create_task(batcher.submit([2]))
    await asyncio.sleep(0.01)
    squarer.gate.set()
    assert await busy == [1] and await kept == [4]
    assert [7, 8] not in squarer.batches and all(7 not in batch for batch in squarer.batches)
    await batcher.close()


async def test_a_full_queue_makes_submit_wait(executor):
    squarer = Squarer()
    batcher = MicroBatcher(squarer, max_batch_size=1, max_queued=2, executor=executor)
    squarer.gate.clear()
    busy = asyncio.create_task(batcher.submit([1]))
    await asyncio.sleep(0.05)
    blocked = asyncio.create_task(batcher.submit([2, 3, 4]))
    await asyncio.sleep(0.05)
    assert not blocked.done() and batcher.stats()["waiting"] == 2
    squarer.gate.set()
    assert await busy == [1] and await blocked == [4, 9, 16]
    await batcher.close()
