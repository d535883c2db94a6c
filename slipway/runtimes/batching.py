"""A micro-batcher: items from concurrent requests coalesced into one batched call.

    submit([a, b]) ─┐                      ┌─► run_batch([a, b, c, d]) on the worker thread
    submit([c])    ─┼─► bounded queue ─► worker loop (one batch at a time, <= max_batch_size)
    submit([d])    ─┘                      └─► each caller gets its own results, in order

Batching amortises the fixed cost of one forward pass over many small requests, while the one
worker keeps a single model call in flight (torch already uses every thread it was given). The
queue is bounded: when it is full, `submit` waits, which pushes back on the callers.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Callable, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    """Runs `run_batch(items) -> results` (same length, same order) on `executor`, batched."""

    def __init__(self, run_batch: Callable[[list[Item]], list[Result]], *, max_batch_size: int,
                 max_queued: int, executor: Executor) -> None:
        self._run_batch = run_batch
        self._max_batch_size = max_batch_size
        self._executor = executor
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]] = asyncio.Queue(max_queued)
        self._worker: asyncio.Task[None] | None = None
        self._running = 0
        self.batches_total = 0
        self.items_total = 0

    async def submit(self, items: list[Item]) -> list[Result]:
        """Queue `items` and wait for their results; raises what `run_batch` raised."""
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work(), name="micro-batcher")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        try:
            for item, future in zip(items, futures):
                await self._queue.put((item, future))
            return list(await asyncio.gather(*futures))
        finally:
            for future in futures:  # a cancelled caller's items are skipped by the worker
                future.cancel()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [(item, future) for item, future in batch if not future.done()]
            if not batch:
                continue
            self._running = len(batch)
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, [item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every caller in the batch gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for (_, future), result in zip(batch, results):
                    if not future.done():
                        future.set_result(result)
            finally:
                self._running = 0
                self.batches_total += 1
                self.items_total += len(batch)

    def stats(self) -> dict[str, int]:
        return {
            "running": self._running,
            "waiting": self._queue.qsize(),
            "batches_total": self.batches_total,
            "inputs_total": self.items_total,
        }

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
