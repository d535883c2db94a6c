"""slipway.runtimes.custom: a package's model.py, sync or async, plain or streaming."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import pytest

from slipway.errors import RuntimeLoadError
from slipway.runtimes import create_runtime, is_stream
from slipway.runtimes.base import UnsupportedRouteError
from slipway.runtimes.custom import CustomRuntime
from slipway.spec.openai import EmbeddingsRequest
from slipway.spec.package import parse_package


async def loaded(make_package, model_py: str, **kwargs) -> CustomRuntime:
    spec, folder = make_package(model_py, **kwargs)
    runtime = create_runtime(spec, folder)
    assert isinstance(runtime, CustomRuntime) and runtime.kind == "custom"
    await runtime.load()
    return runtime


async def collect(stream) -> list:
    return [chunk async for chunk in stream]


async def test_sync_predict_runs_off_the_event_loop(make_package):
    runtime = await loaded(make_package, """
        import threading, time
        class Model:
            def predict(self, request):
                time.sleep(0.2)
                return {"doubled": request["x"] * 2, "thread": threading.current_thread().name}
    """)
    started = time.monotonic()
    results = await asyncio.gather(*(runtime.predict({"x": i}) for i in range(4)))
    assert [r["doubled"] for r in results] == [0, 2, 4, 6]
    assert all(r["thread"] != threading.current_thread().name for r in results)
    # Four 0.2 s predicts on the pool overlap: well under the 0.8 s they would take in turn.
    assert time.monotonic() - started < 0.6
    await runtime.close()


async def test_async_predict_and_async_load(make_package):
    runtime = await loaded(make_package, """
        import asyncio
        class Model:
            async def load(self):
                await asyncio.sleep(0)
                self.greeting = "hi"
            async def predict(self, request):
                return f"{self.greeting} {request['name']}"
    """)
    assert await runtime.predict({"name": "ada"}) == "hi ada"


async def test_sync_load_runs_once_before_predict(make_package):
    runtime = await loaded(make_package, """
        import threading
        class Model:
            def __init__(self):
                self.loads = 0
            def load(self):
                self.loads += 1
                self.load_thread = threading.current_thread().name
            def predict(self, request):
                return {"loads": self.loads, "load_thread": self.load_thread}
    """)
    result = await runtime.predict({})
    assert result["loads"] == 1
    assert result["load_thread"] != threading.current_thread().name


async def test_config_is_passed_when_init_takes_it(make_package):
    runtime = await loaded(make_package, """
        class Model:
            def __init__(self, config):
                self.config = config
            def predict(self, request):
                return {"name": self.config.name, "max": self.config.autoscaling.max_replica}
    """, yaml="name: configured\nkind: custom\nautoscaling: {max_replica: 3}\n")
    assert await runtime.predict(None) == {"name": "configured", "max": 3}


async def test_load_is_optional(make_package):
    runtime = await loaded(make_package, """
        class Model:
            def predict(self, request):
                return [request, request]
    """)
    assert await runtime.predict(7) == [7, 7]


async def test_sync_generator_streams_in_threads_and_is_closed(make_package):
    runtime = await loaded(make_package, """
        import threading
        CLOSED = []
        class Model:
            def predict(self, request):
                try:
                    for word in request["text"].split():
                        yield {"word": word, "thread": threading.current_thread().name}
                finally:
                    CLOSED.append(True)
    """)
    stream = await runtime.predict({"text": "one two three"})
    assert is_stream(stream)
    chunks = await collect(stream)
    assert [c["word"] for c in chunks] == ["one", "two", "three"]
    assert all(c["thread"] != threading.current_thread().name for c in chunks)

    # Stopping early closes the generator (its finally runs).
    stream = await runtime.predict({"text": "a b c d"})
    first = await stream.__anext__()
    assert first["word"] == "a"
    await stream.aclose()
    module = sys.modules[type(runtime._model).__module__]
    assert module.CLOSED == [True, True]


async def test_async_generator_streams(make_package):
    runtime = await loaded(make_package, """
        import asyncio
        class Model:
            async def predict(self, request):
                for i in range(request["n"]):
                    await asyncio.sleep(0)
                    yield f"token-{i}"
    """)
    stream = await runtime.predict({"n": 3})
    assert is_stream(stream)
    assert await collect(stream) == ["token-0", "token-1", "token-2"]


async def test_predict_exception_propagates_and_is_counted(make_package):
    runtime = await loaded(make_package, """
        class Model:
            def predict(self, request):
                raise ValueError("bad input: " + str(request))
    """)
    with pytest.raises(ValueError, match="bad input: 5"):
        await runtime.predict(5)
    stats = runtime.stats()
    assert stats["predict_total"] == 1 and stats["predict_errors_total"] == 1 and stats["running"] == 0


async def test_load_raising_propagates(make_package):
    spec, folder = make_package("""
        class Model:
            def load(self):
                raise RuntimeError("weights are corrupt")
            def predict(self, request):
                return request
    """)
    with pytest.raises(RuntimeError, match="weights are corrupt"):
        await create_runtime(spec, folder).load()


async def test_missing_model_class_says_what_to_add(make_package):
    spec, folder = make_package("def predict(request):\n    return request\n")
    with pytest.raises(RuntimeLoadError, match="has no `class Model`; add one"):
        await create_runtime(spec, folder).load()


async def test_missing_predict_says_what_to_add(make_package):
    spec, folder = make_package("class Model:\n    def load(self):\n        pass\n")
    with pytest.raises(RuntimeLoadError, match="has no predict method; add"):
        await create_runtime(spec, folder).load()


async def test_missing_model_py(make_package):
    spec, folder = make_package(None)
    with pytest.raises(RuntimeLoadError, match="model.py does not exist"):
        await create_runtime(spec, folder).load()


async def test_syntax_error_in_model_py_propagates(make_package):
    spec, folder = make_package("class Model:\n    def predict(self, request)\n        return 1\n")
    with pytest.raises(SyntaxError):
        await create_runtime(spec, folder).load()


async def test_model_py_imports_its_sibling_modules(make_package):
    spec, folder = make_package("""
        from helpers_for_sibling_test import shout
        class Model:
            def predict(self, request):
                return shout(request)
    """)
    (folder / "helpers_for_sibling_test.py").write_text("def shout(text):\n    return text.upper()\n")
    runtime = create_runtime(spec, folder)
    await runtime.load()
    assert await runtime.predict("hey") == "HEY"


async def test_two_packages_do_not_share_a_module(make_package):
    first = await loaded(make_package, "class Model:\n    def predict(self, r):\n        return 'first'\n")
    second = await loaded(make_package, "class Model:\n    def predict(self, r):\n        return 'second'\n")
    assert (await first.predict(None), await second.predict(None)) == ("first", "second")


async def test_embeddings_are_not_served_by_custom(make_package):
    runtime = await loaded(make_package, "class Model:\n    def predict(self, r):\n        return r\n")
    with pytest.raises(UnsupportedRouteError, match="does not serve /v1/embeddings") as caught:
        await runtime.embeddings(EmbeddingsRequest(model="m", input="x"))
    assert caught.value.status_code == 404
    with pytest.raises(UnsupportedRouteError, match="llm runtime"):
        await runtime.chat_completions({"messages": []})


async def test_the_echo_example():
    folder = Path(__file__).resolve().parents[2] / "examples" / "echo"
    runtime = create_runtime(parse_package((folder / "slipway.yaml").read_text()), folder)
    await runtime.load()
    answer = await runtime.predict({"text": "hi"})
    assert answer["echo"] == {"text": "hi"} and answer["model"] == "echo"
    stream = await runtime.predict({"text": "one two", "stream": True})
    assert await collect(stream) == [{"index": 0, "word": "one"}, {"index": 1, "word": "two"}]
    await runtime.close()
