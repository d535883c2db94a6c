"""The vLLM child process of a `engine: vllm` replica: which interpreter, what command, what
environment, and how it is started and stopped.

    find_vllm_python(spec.runtime.python, environ)   slipway.yaml first, then $SLIPWAY_VLLM_PYTHON
    vllm_command(python, model_dir, port, spec)       the `vllm.entrypoints.openai.api_server` argv
    vllm_environment(environ, replica_dir, cpus)      offline, private cache and tmp, CPU binding
    tmp_folder(replica_dir)                           the child's TMPDIR, short enough for its sockets
    spawn(argv, env) ─► EngineProcess ─► stop()       own process group; SIGTERM, then SIGKILL

vLLM lives in its own virtualenv (it pins torch and pulls packages slipway does not want), so it
runs as a child process speaking HTTP on 127.0.0.1. The child gets its own process group so one
signal reaches its engine-core and worker processes too, and on Linux it is told to receive
SIGTERM if the replica dies without closing it, so no orphaned engine keeps memory and cores.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

from slipway.errors import RuntimeLoadError
from slipway.spec.package import PackageSpec

PYTHON_ENV_VAR = "SLIPWAY_VLLM_PYTHON"
SETUP_SCRIPT = "benchmarks/peers/vllm.sh"
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# vLLM reserves one core for its HTTP front end when it binds OpenMP threads itself; on a
# machine this small that costs ~28% of throughput, so every core goes to the model instead.
BIND_ALL_CPUS_AT_MOST = 2
_PR_SET_PDEATHSIG = 1


class VllmNotFoundError(RuntimeLoadError):
    """No interpreter with vLLM installed was configured."""

    code = "vllm_not_found"


def find_vllm_python(configured: str | None, environ: Mapping[str, str], package_dir: Path) -> Path:
    """The interpreter to run vLLM with: `runtime.python` from slipway.yaml, else $SLIPWAY_VLLM_PYTHON.

    Checks only that the file is an executable; `check_has_vllm_command` says how to check the import.
    """
    source, value = ("runtime.python in slipway.yaml", configured) if configured else (
        f"${PYTHON_ENV_VAR}", environ.get(PYTHON_ENV_VAR))
    if not value:
        raise VllmNotFoundError(
            f"engine 'vllm' needs a Python interpreter with vLLM installed, and neither runtime.python in "
            f"slipway.yaml nor ${PYTHON_ENV_VAR} is set; run {SETUP_SCRIPT} (it creates one and prints the "
            f"path), then export {PYTHON_ENV_VAR}=<that path> or set runtime.python"
        )
    candidate = Path(value).expanduser()
    if not candidate.is_absolute() and os.sep not in value:
        found = shutil.which(value, path=environ.get("PATH"))
        candidate = Path(found) if found else candidate
    elif not candidate.is_absolute():
        candidate = Path(package_dir) / candidate
    if not (candidate.is_file() and os.access(candidate, os.X_OK)):
        raise VllmNotFoundError(
            f"{source} is {value!r}, which is not an executable Python interpreter; point it at the "
            f"python of a virtualenv with vLLM (run {SETUP_SCRIPT} to create one)"
        )
    return candidate


def check_has_vllm_command(python: Path) -> list[str]:
    """An argv that exits 0 when `python` can import vLLM, without paying for the import itself."""
    return [str(python), "-c",
            "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('vllm') else 3)"]


def missing_vllm_error(python: Path, detail: str) -> VllmNotFoundError:
    return VllmNotFoundError(
        f"{python} cannot import vllm ({detail}); install it there (run {SETUP_SCRIPT}), or point "
        f"runtime.python in slipway.yaml / ${PYTHON_ENV_VAR} at an interpreter that has it"
    )


def vllm_dtype(dtype: str) -> str:
    """vLLM's --dtype for `runtime.dtype`: auto serves in bfloat16, which every vLLM device supports."""
    return "bfloat16" if dtype == "auto" else dtype


def vllm_command(python: Path, model_dir: Path, port: int, spec: PackageSpec,
                 adapters: Mapping[str, Path] | None = None) -> list[str]:
    """The command line of vLLM's OpenAI server for this package, listening on 127.0.0.1:`port`."""
    settings = spec.runtime
    argv = [
        str(python), "-m", API_SERVER_MODULE,
        "--model", str(model_dir),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--dtype", vllm_dtype(settings.dtype),
        "--max-model-len", str(settings.max_model_len),
        "--max-num-seqs", str(settings.max_num_seqs),
        "--served-model-name", spec.name,
    ]
    if adapters:
        argv += ["--enable-lora", "--lora-modules", *(f"{name}={path}" for name, path in adapters.items())]
    return argv


def vllm_environment(environ: Mapping[str, str], replica_dir: Path, cpus: Iterable[int]) -> dict[str, str]:
    """The child's environment: the replica's own, made offline, with private cache and tmp folders."""
    env = dict(environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM's CPU default takes a large share of RAM
    env["VLLM_CACHE_ROOT"] = str(Path(replica_dir) / "cache")
    env["TMPDIR"] = str(tmp_folder(replica_dir))
    env["HF_HUB_OFFLINE"] = "1"
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    cpu_list = sorted(set(cpus))
    if 0 < len(cpu_list) <= BIND_ALL_CPUS_AT_MOST:
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_ranges(cpu_list))
    return env


# vLLM opens ZMQ sockets at "<TMPDIR>/<uuid4>"; a Unix socket path holds at most 107 bytes.
_SOCKET_PATH_MAX = 107
_SOCKET_NAME_LEN = 1 + 36


def tmp_folder(replica_dir: Path) -> Path:
    """The child's TMPDIR: `<replica_dir>/tmp`, or, when that path is too long for the Unix sockets
    vLLM opens in it (a deep $SLIPWAY_HOME), a folder named after the replica's in the system's temp
    folder, or in /tmp when that is deep too. The same replica folder always gives the same answer,
    so the folder can be removed later."""
    private = Path(replica_dir) / "tmp"
    digest = hashlib.sha256(str(Path(replica_dir).resolve()).encode()).hexdigest()[:16]
    for folder in (private, Path(tempfile.gettempdir()) / f"slipway-vllm-{digest}"):
        if len(os.fsencode(str(folder))) + _SOCKET_NAME_LEN <= _SOCKET_PATH_MAX:
            return folder
    return Path("/tmp") / f"slipway-vllm-{digest}"


def cpu_ranges(cpus: Iterable[int]) -> str:
    """CPU ids as vLLM's list syntax: [0, 1, 2, 5] -> '0-2,5'."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    start = previous = None
    for cpu in ordered:
        if start is None:
            start = previous = cpu
        elif cpu == previous + 1:
            previous = cpu
        else:
            parts.append(f"{start}-{previous}" if start != previous else str(start))
            start = previous = cpu
    if start is not None:
        parts.append(f"{start}-{previous}" if start != previous else str(start))
    return ",".join(parts)


def available_cpus() -> set[int]:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def replica_folder(home: Path, replica_id: str) -> Path:
    """$SLIPWAY_HOME/cache/vllm/<replica>, with the id made safe as one path component."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", replica_id).strip(".") or "replica"
    return Path(home) / "cache" / "vllm" / safe


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now; vLLM binds it a moment later (it exits if someone else did)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EngineProcess:
    """The running vLLM server: its own process group, stopped with SIGTERM and then SIGKILL."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.pid = process.pid
        atexit.register(self.kill)

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:  # the whole group is gone already
            pass

    def kill(self) -> None:
        """SIGKILL the whole group at once (the last resort, also run at interpreter exit)."""
        self.signal_group(signal.SIGKILL)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def forget(self) -> None:
        atexit.unregister(self.kill)


def spawn(argv: list[str], env: Mapping[str, str], *, cwd: Path | None = None) -> EngineProcess:
    """Start `argv` in a new process group, its stdout and stderr on this process's stderr."""
    output = _stderr_fd()
    process = subprocess.Popen(
        argv, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
        start_new_session=True, preexec_fn=_die_with_parent(),
    )
    return EngineProcess(process)


def _stderr_fd() -> int | None:
    """Our stderr's file descriptor, so the child's lines land in the replica log unbuffered."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a stderr replaced by an in-memory stream
        return None


def _die_with_parent():
    """A preexec_fn asking Linux to SIGTERM the child when this process dies; None elsewhere.

    libc and prctl are looked up here, in the parent: the code that runs between fork and exec
    must not import or allocate.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    signum = int(signal.SIGTERM)

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)

    return set_parent_death_signal
