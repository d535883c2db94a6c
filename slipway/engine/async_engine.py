"""`AsyncLLMEngine`: the engine stepped in its own thread, streaming to asyncio consumers.

    asyncio side                             engine thread
    generate() ── validate, register stream
               ── submit("add") ─────────────► drain commands ─► engine.add_request / abort_request
               ◄── queue.put (per step) ─────── engine.step() ─► outputs per request
    consumer gone (break, cancel, disconnect)
               ── submit("abort") ───────────► abort at the next step boundary: blocks freed

`from_pretrained` loads the model on the engine thread itself, so that one thread (and so one
OpenMP pool) does all the tensor work. Only the engine thread touches the `LLMEngine`; the
asyncio side talks to it through a command list guarded by a condition, and hears back through
each request's own asyncio queue (filled with `call_soon_threadsafe`), so any number of event
loops may consume. A step that raises stops the thread and fails every stream with
`EngineDeadError`. The exceptions, safe from any thread: `stats()` (a snapshot swapped in after
each step), the latency histograms (locked), `cached_block_hashes()` (the KV pool locks its hash
map for it), and the LoRA adapter registry (`add_lora` checks the folder in a worker thread and
registers under the registry's lock while the engine steps; `remove_lora` wakes the engine
thread, which drops the weights once no running request uses them).

Latencies are measured where tokens leave the engine: in the engine thread, as each step's
output is handed to its request's queue, so whole and streamed answers are timed alike.

    time to first token   arrival (generate() called) ─► first output carrying a token
    inter-token latency   between successive outputs carrying tokens, divided by the tokens the
                          later one carries (speculative decoding delivers several at once), and
                          observed once per token; with n > 1 the longest choice's count is used
    end-to-end latency    arrival ─► the last output, for requests that finish (not aborted)
"""

from __future__ import annotations

import asyncio
import bisect
import math
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Sequence

from slipway.engine.config import EngineConfig
from slipway.engine.engine import LLMEngine
from slipway.engine.errors import EngineDeadError, EngineOverloadedError, EngineRequestError
from slipway.engine.outputs import RequestOutput
from slipway.engine.sampling_params import SamplingParams


_IDLE_WAIT_S = 0.005

# Bucket bounds in seconds, wide enough for both ends of serving: a GPU's first token in tens of
# milliseconds and a few milliseconds between tokens, a CPU's in seconds and a tenth of a second.
TTFT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
               0.5, 0.75, 1.0, 2.5)
E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0)
LATENCY_WINDOW = 1024
"""Recent observations kept per latency for the quantiles in /stats."""
QUANTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True)
class HistogramSnapshot:
    """A latency histogram at one moment, in the shape Prometheus exports."""

    bounds: tuple[float, ...]
    """Upper bounds of the buckets in seconds, ascending; a last bucket, +Inf, is implicit."""
    counts: tuple[int, ...]
    """Observations per bucket, not cumulative: len(bounds) + 1 of them."""
    sum: float
    count: int


class LatencyHistogram:
    """Bucket counts since start (for Prometheus) and a window of recent values (for quantiles).

    Written by the engine thread, read by any other: one lock, held for a few operations.
    """

    def __init__(self, bounds: Sequence[float], window: int = LATENCY_WINDOW) -> None:
        self.bounds = tuple(sorted(bounds))
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0
        self._count = 0
        self._recent: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def observe(self, seconds: float, count: int = 1) -> None:
        """Record `count` observations of `seconds` at once."""
        index = bisect.bisect_left(self.bounds, seconds)  # the first bucket whose bound is >= seconds
        with self._lock:
            self._counts[index] += count
            self._sum += seconds * count
            self._count += count
            self._recent.append(seconds)

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            return HistogramSnapshot(self.bounds, tuple(self._counts), self._sum, self._count)

    def quantiles(self) -> dict[str, float | None]:
        """p50, p90 and p99 (nearest rank) of the recent window; None while it is empty."""
        with self._lock:
            recent = sorted(self._recent)
        if not recent:
            return {f"p{round(q * 100)}": None for q in QUANTILES}
        return {f"p{round(q * 100)}": recent[max(0, math.ceil(q * len(recent)) - 1)] for q in QUANTILES}


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    arrival: float
    """Clock reading when generate() was called."""
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    last_token_at: float | None = None
    """Clock reading of the latest output that carried tokens (engine thread only)."""


class AsyncLLMEngine:
    """Async front of one `LLMEngine`; see the module docstring."""

    def __init__(self, engine: LLMEngine, *, clock: Callable[[], float] = time.perf_counter) -> None:
        """`clock`: seconds on a monotonic scale, read to time requests (a fake one in tests)."""
        self.engine = engine
        self._clock = clock
        self.time_to_first_token = LatencyHistogram(TTFT_BUCKETS)
        self.inter_token_latency = LatencyHistogram(ITL_BUCKETS)
        self.e2e_request_latency = LatencyHistogram(E2E_BUCKETS)
        self._condition = threading.Condition()
        self._commands: list[tuple[Any, ...]] = []
        self._streams: dict[str, _Stream] = {}
        self._streams_lock = threading.Lock()
        self._stats: dict[str, Any] = engine.stats()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._dead: BaseException | None = None
        config = engine.config
        self._max_in_flight = config.max_num_seqs + config.max_waiting_requests

    @classmethod
    def from_pretrained(cls, model_path: str | Path, config: EngineConfig | None = None, *,
                        tokenizer: Any | None | str = "auto",
                        clock: Callable[[], float] = time.perf_counter) -> "AsyncLLMEngine":
        """Load the model on the engine thread, which then stays to step it (blocking: call it in a
        worker thread from async code). Raises what loading raised.

        One thread does all of the engine's tensor work, loading included. PyTorch's OpenMP keeps a
        pool of threads per thread that computes; with a second pool alive (the loader's) there are
        more OpenMP threads than cores, and libgomp then parks its threads at once after every
        operator instead of spinning briefly, so each of a step's hundreds of operators pays a
        wake-up. On SmolLM2 at 16 streams that cost 13% of throughput (docs/benchmarks.md).
        """
        built: Future[AsyncLLMEngine] = Future()

        def load_then_step() -> None:
            try:
                front = cls(LLMEngine(model_path, config, tokenizer=tokenizer), clock=clock)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
                built.set_exception(exc)
                return
            front._thread = threading.current_thread()
            built.set_result(front)
            front._run()

        threading.Thread(target=load_then_step, name="slipway-engine", daemon=True).start()
        return built.result()

    @property
    def tokenizer(self) -> Any | None:
        return self.engine.tokenizer

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the engine thread (generate() does this on first use; an engine from
        `from_pretrained` has it already)."""
        if self._dead is not None:
            raise EngineDeadError(f"the engine stopped: {self._dead}; restart the replica")
        if self._stopping:
            raise EngineDeadError("the engine was shut down; build a new one")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="slipway-engine", daemon=True)
            self._thread.start()

    async def generate(self, prompt_token_ids: Sequence[int], params: SamplingParams | None = None, *,
                       request_id: str | None = None, lora_name: str | None = None) -> AsyncIterator[RequestOutput]:
        """Stream a request's progress step by step, with the registered adapter `lora_name` if
        given; leaving early aborts it."""
        arrival = self._clock()
        params = params or SamplingParams()
        self.engine.validate_request(prompt_token_ids, params, lora_name)
        self.start()
        request_id = request_id or uuid.uuid4().hex
        stream = _Stream(asyncio.get_running_loop(), arrival)
        with self._streams_lock:
            if request_id in self._streams:
                raise EngineRequestError(f"request id {request_id!r} is already in flight; use a unique id")
            if len(self._streams) >= self._max_in_flight:
                raise EngineOverloadedError(f"{len(self._streams)} requests are in flight, the most this engine takes; retry later")
            self._streams[request_id] = stream
        self._submit(("add", request_id, list(prompt_token_ids), params, lora_name))
        finished = False
        try:
            while True:
                item = await stream.queue.get()
                if isinstance(item, BaseException):
                    finished = True  # the engine side already dropped it
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            with self._streams_lock:
                self._streams.pop(request_id, None)
            if not finished:
                self._submit(("abort", request_id))

    async def abort(self, request_id: str) -> None:
        """Abort a request; its stream, if someone still reads it, ends without more output."""
        self._submit(("abort", request_id))

    async def add_lora(self, name: str, folder: str | Path) -> None:
        """Register a LoRA adapter (see `LLMEngine.add_lora`); the folder is read in a worker thread."""
        await asyncio.to_thread(self.engine.add_lora, name, folder)

    async def remove_lora(self, name: str) -> bool:
        """Unregister an adapter (see `LLMEngine.remove_lora`); False if it was not registered."""
        removed = self.engine.remove_lora(name)
        if removed:
            self._submit(("drop_unregistered_loras",))  # an idle engine thread frees the weights now
        return removed

    def loras(self) -> list[str]:
        """Registered adapter names, sorted."""
        return self.engine.loras()

    def lora_folders(self) -> dict[str, Path]:
        """Registered adapter name -> its folder."""
        return self.engine.lora_folders()

    def stats(self) -> dict[str, Any]:
        """The engine's counters as of the end of the latest step."""
        return dict(self._stats)

    def latency_histograms(self) -> dict[str, HistogramSnapshot]:
        """The three request latencies since start, by their metric name (see the module docstring)."""
        return {name: histogram.snapshot() for name, histogram in self._latencies()}

    def latency_quantiles(self) -> dict[str, dict[str, float | None]]:
        """p50/p90/p99 of each latency over its recent window, by the same names."""
        return {name: histogram.quantiles() for name, histogram in self._latencies()}

    def cached_block_hashes(self, limit: int) -> list[int]:
        """Up to `limit` cached KV blocks' 63-bit hashes, most recently used first (see kv/hashing.py)."""
        return self.engine.kv.recent_block_hashes(limit)

    def _latencies(self) -> list[tuple[str, LatencyHistogram]]:
        return [("time_to_first_token_seconds", self.time_to_first_token),
                ("inter_token_latency_seconds", self.inter_token_latency),
                ("e2e_request_latency_seconds", self.e2e_request_latency)]

    async def shutdown(self) -> None:
        """Stop the thread after the current step; streams still open fail with EngineDeadError."""
        with self._condition:
            self._stopping = True
            self._condition.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        self._fail_all(EngineDeadError("the engine was shut down"))

    # -- engine thread ---------------------------------------------------------------------

    def _submit(self, command: tuple[Any, ...]) -> None:
        with self._condition:
            self._commands.append(command)
            self._condition.notify()

    def _run(self) -> None:
        try:
            while True:
                with self._condition:
                    while not (self._commands or self._stopping or self.engine.has_unfinished_requests()):
                        self._condition.wait()
                    if not self._commands and not self.engine.last_step_ran and self.engine.has_unfinished_requests():
                        # Nothing could run last time; do not spin until something changes.
                        self._condition.wait(timeout=_IDLE_WAIT_S)
                    if self._stopping:
                        return
                    commands, self._commands = self._commands, []
                for command in commands:
                    self._apply(command)
                outputs = self.engine.step()
                self._stats = self.engine.stats()
                for output in outputs:
                    self._deliver(output.request_id, output)
                for request_id, error in self.engine.take_failed_requests():
                    self._deliver(request_id, error)
        except BaseException as exc:  # the engine is unusable now; tell everyone waiting
            self._dead = exc
            self._fail_all(EngineDeadError(f"the engine stopped: {exc!r}; restart the replica"))

    def _apply(self, command: tuple[Any, ...]) -> None:
        if command[0] == "abort":
            final = self.engine.abort_request(command[1])
            if final is not None:
                self._deliver(command[1], final)
            return
        if command[0] == "drop_unregistered_loras":
            self.engine.lora_table.drop_unregistered()
            return
        _, request_id, prompt, params, lora_name = command
        with self._streams_lock:
            gone = request_id not in self._streams
        if gone:  # the consumer left before the request started
            return
        try:
            self.engine.add_request(request_id, prompt, params, lora_name)
        except Exception as exc:  # noqa: BLE001 - refused requests go back to their caller
            self._deliver(request_id, exc)

    def _deliver(self, request_id: str, item: RequestOutput | BaseException) -> None:
        with self._streams_lock:
            stream = self._streams.get(request_id)
        if stream is None:
            return
        if isinstance(item, RequestOutput):
            self._time(stream, item)
        try:
            stream.loop.call_soon_threadsafe(stream.queue.put_nowait, item)
        except RuntimeError:  # its event loop is closed: nobody will read; free the request
            self.engine.abort_request(request_id)

    def _time(self, stream: _Stream, output: RequestOutput) -> None:
        """Observe the latencies this output ends (see the module docstring)."""
        now = self._clock()
        num_tokens = max((len(choice.token_ids) for choice in output.outputs), default=0)
        if num_tokens:
            if stream.last_token_at is None:
                self.time_to_first_token.observe(now - stream.arrival)
            else:
                self.inter_token_latency.observe((now - stream.last_token_at) / num_tokens, num_tokens)
            stream.last_token_at = now
        if output.finished and all(choice.finish_reason != "abort" for choice in output.outputs):
            self.e2e_request_latency.observe(now - stream.arrival)

    def _fail_all(self, error: BaseException) -> None:
        with self._streams_lock:
            streams = list(self._streams.values())
        for stream in streams:
            try:
                stream.loop.call_soon_threadsafe(stream.queue.put_nowait, error)
            except RuntimeError:
                pass
