"""The `custom` runtime: the package's own `model.py`.

    class Model:
        def __init__(self, config=None): ...     # optional; receives the PackageSpec as `config`
        def load(self): ...                      # optional; sync (run in a thread) or async
        def predict(self, request): ...          # sync (thread pool) or async; a generator streams

`model.py` is imported by file path under a module name unique to the package, with the package
folder on `sys.path` so it can import its own helper modules. Sync code runs on a bounded thread
pool sized by `autoscaling.concurrency_target` (the concurrency one replica is sized for), so a
slow `predict` never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import inspect
import sys
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from slipway.errors import RuntimeLoadError
from slipway.runtimes.base import Chunk, PredictResult, Runtime, is_stream
from slipway.spec.package import CUSTOM_MODEL_FILE, PackageSpec

# Sentinel a worker thread returns when a sync generator is exhausted (StopIteration cannot
# cross an executor future).
_EXHAUSTED = object()


class CustomRuntime(Runtime):
    """Runs `Model` from the package's `model.py`."""

    kind = "custom"

    def __init__(self, spec: PackageSpec, package_dir: Path) -> None:
        self.spec = spec
        self.package_dir = Path(package_dir).resolve()
        self._model: Any = None
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, spec.autoscaling.concurrency_target), thread_name_prefix="predict"
        )
        self._running = 0
        self._predict_total = 0
        self._predict_errors = 0

    async def load(self) -> None:
        loop = asyncio.get_running_loop()
        module = await loop.run_in_executor(self._executor, import_model_module, self.package_dir)
        model_class = getattr(module, "Model", None)
        if not inspect.isclass(model_class):
            raise RuntimeLoadError(
                f"{self.package_dir / CUSTOM_MODEL_FILE} has no `class Model`; add one with "
                "`def predict(self, request)` (and optionally `def load(self)`)"
            )
        if not callable(getattr(model_class, "predict", None)):
            raise RuntimeLoadError(
                f"`Model` in {self.package_dir / CUSTOM_MODEL_FILE} has no predict method; add "
                "`def predict(self, request): return {...}` (it may be async or a generator)"
            )
        self._model = await loop.run_in_executor(self._executor, _instantiate, model_class, self.spec)
        load = getattr(self._model, "load", None)
        if load is None:
            return
        if inspect.iscoroutinefunction(load):
            await load()
        else:
            result = await loop.run_in_executor(self._executor, load)
            if inspect.isawaitable(result):
                await result

    async def predict(self, body: Any) -> PredictResult:
        if self._model is None:
            raise RuntimeLoadError("the model is not loaded yet; wait for GET /health/ready to answer 200")
        self._predict_total += 1
        self._running += 1
        try:
            result = await self._call_predict(body)
        except BaseException:
            self._predict_errors += 1
            raise
        finally:
            self._running -= 1
        if is_stream(result):
            return result
        if isinstance(result, Iterator) and not isinstance(result, (str, bytes)):
            return self._iterate_in_threads(result)
        return result

    async def _call_predict(self, body: Any) -> Any:
        predict = self._model.predict
        if inspect.isasyncgenfunction(predict):
            return predict(body)
        if inspect.iscoroutinefunction(predict):
            return await predict(body)
        result = await asyncio.get_running_loop().run_in_executor(self._executor, predict, body)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _iterate_in_threads(self, chunks: Iterator[Chunk]) -> AsyncIterator[Chunk]:
        """Each `next()` of a sync generator runs on the pool; closing the stream closes it."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                chunk = await loop.run_in_executor(self._executor, next, chunks, _EXHAUSTED)
                if chunk is _EXHAUSTED:
                    return
                yield chunk
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                await loop.run_in_executor(self._executor, close)

    def stats(self) -> dict[str, Any]:
        return {
            "running": self._running,
            "waiting": 0,
            "predict_total": self._predict_total,
            "predict_errors_total": self._predict_errors,
        }

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def import_model_module(package_dir: Path) -> ModuleType:
    """Import `<package_dir>/model.py` as a module whose name is unique to that folder."""
    path = Path(package_dir).resolve() / CUSTOM_MODEL_FILE
    if not path.is_file():
        raise RuntimeLoadError(
            f"{path} does not exist; a kind 'custom' package needs a {CUSTOM_MODEL_FILE} with `class Model` "
            "(slipway init NAME --kind custom writes a template)"
        )
    name = "slipway_package_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _instantiate(model_class: type, spec: PackageSpec) -> Any:
    """`Model(config=spec)` when its __init__ takes `config` (or **kwargs), else `Model()`."""
    try:
        parameters = inspect.signature(model_class).parameters.values()
    except (TypeError, ValueError):  # a builtin or C-implemented __init__
        return model_class()
    takes_config = any(
        p.name == "config" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) or p.kind is p.VAR_KEYWORD
        for p in parameters
    )
    return model_class(config=spec) if takes_config else model_class()
