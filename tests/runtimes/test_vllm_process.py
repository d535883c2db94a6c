"""slipway.runtimes.vllm_process: interpreter, command line, environment and process group of vLLM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from slipway.runtimes import vllm_process
from slipway.runtimes.vllm_process import (
    VllmNotFoundError, cpu_ranges, find_vllm_python, replica_folder, tmp_folder, vllm_command, vllm_environment,
)
from slipway.spec.package import parse_package

PACKAGE = "name: smol\nkind: llm\nengine: vllm\nweights: ./weights\n"


def spec_with(runtime: str = "") -> object:
    return parse_package(PACKAGE + (f"runtime: {runtime}\n" if runtime else ""))


# -- the interpreter ---------------------------------------------------------------------------

def test_no_interpreter_configured_names_both_settings_and_the_setup_script(tmp_path):
    with pytest.raises(VllmNotFoundError) as caught:
        find_vllm_python(None, {}, tmp_path)
    message = caught.value.message
    assert "runtime.python" in message and "SLIPWAY_VLLM_PYTHON" in message
    assert "benchmarks/peers/vllm.sh" in message


def test_slipway_yaml_wins_over_the_environment(tmp_path):
    python = Path(sys.executable)
    assert find_vllm_python(str(python), {"SLIPWAY_VLLM_PYTHON": "/nowhere/python"}, tmp_path) == python
    assert find_vllm_python(None, {"SLIPWAY_VLLM_PYTHON": str(python)}, tmp_path) == python


def test_a_bare_name_is_looked_up_on_path_and_a_relative_path_in_the_package(tmp_path):
    interpreter = tmp_path / "venv" / "bin" / "python"
    interpreter.parent.mkdir(parents=True)
    interpreter.write_text("#!/bin/sh\n")
    interpreter.chmod(0o755)
    assert find_vllm_python("python", {"PATH": str(interpreter.parent)}, tmp_path) == interpreter
    assert find_vllm_python("venv/bin/python", {}, tmp_path) == interpreter


def test_a_path_that_is_not_an_executable_says_which_setting_holds_it(tmp_path):
    not_executable = tmp_path / "python"
    not_executable.write_text("")
    with pytest.raises(VllmNotFoundError) as caught:
        find_vllm_python(None, {"SLIPWAY_VLLM_PYTHON": str(not_executable)}, tmp_path)
    assert "$SLIPWAY_VLLM_PYTHON" in caught.value.message and str(not_executable) in caught.value.message


# -- the command line --------------------------------------------------------------------------

def test_the_command_line_carries_the_package_settings():
    spec = spec_with("{max_model_len: 1024, max_num_seqs: 12, dtype: float32}")
    argv = vllm_command(Path("/venv/bin/python"), Path("/models/smol"), 18001, spec)
    assert argv == [
        "/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server",
        "--model", "/models/smol", "--host", "127.0.0.1", "--port", "18001",
        "--dtype", "float32", "--max-model-len", "1024", "--max-num-seqs", "12",
        "--served-model-name", "smol",
    ]


@pytest.mark.parametrize(("dtype", "expected"), [("auto", "bfloat16"), ("bfloat16", "bfloat16"),
                                                  ("float32", "float32"), ("float16", "float16")])
def test_dtype_auto_serves_in_bfloat16(dtype, expected):
    argv = vllm_command(Path("python"), Path("/m"), 1, spec_with(f"{{dtype: {dtype}}}"))
    assert argv[argv.index("--dtype") + 1] == expected


def test_adapters_turn_on_lora_with_one_module_each():
    argv = vllm_command(Path("python"), Path("/m"), 1, spec_with(),
                        {"support": Path("/a/support"), "legal": Path("/a/legal")})
    assert argv[-4:] == ["--enable-lora", "--lora-modules", "support=/a/support", "legal=/a/legal"]


# -- the environment ---------------------------------------------------------------------------

def test_the_child_is_offline_with_private_cache_and_tmp_folders(tmp_path):
    env = vllm_environment({"PATH": "/bin", "HF_HUB_OFFLINE": "0"}, tmp_path / "r-1", cpus=range(8))
    assert env["PATH"] == "/bin"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_CACHE_ROOT"] == str(tmp_path / "r-1" / "cache")
    assert env["TMPDIR"] == str(tmp_folder(tmp_path / "r-1"))
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_the_child_tmp_folder_is_the_replicas_own_when_its_path_is_short():
    assert tmp_folder(Path("/srv/slipway/cache/vllm/r-1")) == Path("/srv/slipway/cache/vllm/r-1/tmp")


def test_a_deep_replica_folder_gets_a_tmp_folder_short_enough_for_vllms_sockets(monkeypatch):
    # vLLM binds ZMQ sockets at <TMPDIR>/<uuid4>; past 107 bytes it exits before it is ready.
    deep = Path("/srv/" + "a" * 90) / "cache" / "vllm" / "r-1"
    folder = tmp_folder(deep)
    assert len(str(folder / str(uuid.uuid4()))) <= 107
    assert folder == tmp_folder(deep)  # the same every time, so close() removes what load() made
    assert folder != tmp_folder(deep.with_name("r-2"))
    monkeypatch.setattr(tempfile, "tempdir", "/srv/" + "b" * 90)  # the system temp folder is deep too
    assert len(str(tmp_folder(deep) / str(uuid.uuid4()))) <= 107


def test_a_kv_cache_size_already_set_is_kept(tmp_path):
    assert vllm_environment({"VLLM_CPU_KVCACHE_SPACE": "8"}, tmp_path, cpus=[0])["VLLM_CPU_KVCACHE_SPACE"] == "8"


def test_on_two_cores_openmp_threads_bind_every_core(tmp_path):
    assert vllm_environment({}, tmp_path, cpus={0, 1})["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    assert vllm_environment({}, tmp_path, cpus={2, 5})["VLLM_CPU_OMP_THREADS_BIND"] == "2,5"


def test_on_larger_machines_vllm_binds_threads_itself(tmp_path):
    assert "VLLM_CPU_OMP_THREADS_BIND" not in vllm_environment({}, tmp_path, cpus=range(16))


def test_an_operator_binding_is_kept(tmp_path):
    env = vllm_environment({"VLLM_CPU_OMP_THREADS_BIND": "nobind"}, tmp_path, cpus={0, 1})
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"


def test_cpu_ranges():
    assert cpu_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert cpu_ranges([3]) == "3"
    assert cpu_ranges([]) == ""


def test_replica_ids_become_one_safe_folder(tmp_path):
    assert replica_folder(tmp_path, "r-abc.1") == tmp_path / "cache" / "vllm" / "r-abc.1"
    assert replica_folder(tmp_path, "../../etc") == tmp_path / "cache" / "vllm" / "_.._etc"


# -- the process group -------------------------------------------------------------------------

GRANDPARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(child.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups are checked through /proc")
def test_terminating_the_group_reaches_the_grandchildren(tmp_path):
    out = tmp_path / "out"
    with open(out, "w") as stdout:
        process = subprocess.Popen([sys.executable, "-c", GRANDPARENT], stdout=stdout, start_new_session=True)
    engine = vllm_process.EngineProcess(process)
    deadline = time.monotonic() + 10
    while not out.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.02)
    grandchild = int(out.read_text())
    assert _alive(grandchild)
    engine.kill()
    engine.forget()
    assert process.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(grandchild)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's prctl")
def test_the_child_gets_sigterm_when_the_replica_dies(tmp_path):
    """A replica killed with SIGKILL cannot close its runtime; the kernel must stop vLLM instead."""
    pid_file = tmp_path / "engine.pid"
    replica = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
from slipway.runtimes import vllm_process
engine = vllm_process.spawn([sys.executable, "-c", "import time; time.sleep(600)"], {{}})
open({str(pid_file)!r}, "w").write(str(engine.pid))
time.sleep(600)
"""], env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    engine_pid = int(pid_file.read_text())
    assert _alive(engine_pid)
    replica.kill()
    replica.wait(10)
    deadline = time.monotonic() + 5
    while _alive(engine_pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(engine_pid)
