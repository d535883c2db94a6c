"""`AsyncLLMEngine`: the engine stepped in its own thread, streaming to asyncio consumers.

    asyncio side                             engine thread
    generate() ── validate, register stream
               ── submit("add") ─────────────► drain commands ─► engine.add_request / abort_request
               ◄── queue.put (per step) ─────── engine.step() ─► outputs per request
    consumer gone (break, cancel, disconnect)
               ── submit("abort") ───────────► abort at the next step boundary: blocks freed

Only the engine thread touches the `LLMEngine`; the asyncio side talks to it through a command
list guarded by a condition, and hears back through each request's own asyncio queue (filled
with `call_soon_threadsafe`), so any number of event loops may consume. A step that raises
stops the thread and fails every stream with `EngineDeadError`.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

from slipway.engine.config import EngineConfig
from slipway.engine.engine import LLMEngine
from slipway.engine.errors import EngineDeadError, EngineOverloadedError, EngineRequestError
from slipway.engine.outputs import RequestOutput
from slipway.engine.sampling_params import SamplingParams


_IDLE_WAIT_S = 0.005


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)


class AsyncLLMEngine:
    """Async front of one `LLMEngine`; see the module docstring."""

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
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
                        tokenizer: Any | None | str = "auto") -> "AsyncLLMEngine":
        """Load the model (blocking: call it in a worker thread from async code) and wrap it."""
        return cls(LLMEngine(model_path, config, tokenizer=tokenizer))

    @property
    def tokenizer(self) -> Any | None:
        return self.engine.tokenizer

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the engine thread (generate() does this on first use)."""
        if self._dead is not None:
            raise EngineDeadError(f"the engine stopped: {self._dead}; restart the replica")
        if self._stopping:
            raise EngineDeadError("the engine was shut down; build a new one")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="slipway-engine", daemon=True)
            self._thread.start()

    async def generate(self, prompt_token_ids: Sequence[int], params: SamplingParams | None = None, *,
                       request_id: str | None = None) -> AsyncIterator[RequestOutput]:
        """Stream a request's progress step by step; leaving early aborts it."""
        params = params or SamplingParams()
        self.engine.validate_request(prompt_token_ids, params)
        self.start()
        request_id = request_id or uuid.uuid4().hex
        stream = _Stream(asyncio.get_running_loop())
        with self._streams_lock:
            if request_id in self._streams:
                raise EngineRequestError(f"request id {request_id!r} is already in flight; use a unique id")
            if len(self._streams) >= self._max_in_flight:
                raise EngineOverloadedError(f"{len(self._streams)} requests are in flight, the most this engine takes; retry later")
            self._streams[request_id] = stream
        self._submit(("add", request_id, list(prompt_token_ids), params))
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

    def stats(self) -> dict[str, Any]:
        """The engine's counters as of the end of the latest step."""
        return dict(self._stats)

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
        except BaseException as exc:  # the engine is unusable now; tell everyone waiting
            self._dead = exc
            self._fail_all(EngineDeadError(f"the engine stopped: {exc!r}; restart the replica"))

    def _apply(self, command: tuple[Any, ...]) -> None:
        if command[0] == "abort":
            final = self.engine.abort_request(command[1])
            if final is not None:
                self._deliver(command[1], final)
            return
        _, request_id, prompt, params = command
        with self._streams_lock:
            gone = request_id not in self._streams
        if gone:  # the consumer left before the request started
            return
        try:
            self.engine.add_request(request_id, prompt, params)
        except Exception as exc:  # noqa: BLE001 - refused requests go back to their caller
            self._deliver(request_id, exc)

    def _deliver(self, request_id: str, item: RequestOutput | BaseException) -> None:
        with self._streams_lock:
            stream = self._streams.get(request_id)
        if stream is None:
            return
        try:
            stream.loop.call_soon_threadsafe(stream.queue.put_nowait, item)
        except RuntimeError:  # its event loop is closed: nobody will read; free the request
            self.engine.abort_request(request_id)

    def _fail_all(self, error: BaseException) -> None:
        with self._streams_lock:
            streams = list(self._streams.values())
        for stream in streams:
            try:
                stream.loop.call_soon_threadsafe(stream.queue.put_nowait, error)
            except RuntimeError:
                pass
