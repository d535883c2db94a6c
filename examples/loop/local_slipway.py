"""A throwaway `slipway up` for the loop: a fresh SLIPWAY_HOME in a temporary folder, a free port.

    with LocalSlipway.start(work_dir) as slipway:      # blocks until the management API answers
        slipway.url, slipway.admin_key
    # on leaving: SIGINT (slipway up stops its replicas and jobs), then the folder is deleted

The converted SmolLM2 weights are the one slow thing a fresh home would redo (~20 s on 2 cores):
when the user's own home already has `models/`, the temporary home links to it.

`torch_threads` becomes OMP_NUM_THREADS of `slipway up`, so of its replicas and fine-tuning jobs:
on two cores shared with other work, one thread per process is the steady choice (see README.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 60.0


class StartError(Exception):
    """`slipway up` did not come up; the message says why and where its log is."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LocalSlipway:
    """A running `slipway up` child process and its home."""

    process: subprocess.Popen
    home: Path
    url: str
    admin_key: str
    log_path: Path
    keep_home: bool = False

    @classmethod
    def start(cls, work_dir: Path, *, keep_home: bool = False, torch_threads: int | None = None) -> LocalSlipway:
        home = work_dir / "slipway-home"
        home.mkdir(parents=True)
        user_models = Path(os.environ.get("SLIPWAY_HOME") or Path.home() / ".slipway").expanduser() / "models"
        if user_models.is_dir():
            (home / "models").symlink_to(user_models, target_is_directory=True)
        port = free_port()
        log_path = work_dir / "slipway-up.log"
        env = {**os.environ, "SLIPWAY_HOME": str(home)}
        env.pop("SLIPWAY_DATABASE_URL", None)  # the embedded SQLite store, whatever the shell says
        if torch_threads is not None:
            env["OMP_NUM_THREADS"] = str(torch_threads)
        command = [sys.executable, "-m", "slipway", "up", "--port", str(port), "--home", str(home)]
        with open(log_path, "wb") as log:
            # A session of its own: Ctrl-C in the terminal reaches this script only, and `stop` then
            # sends `slipway up` exactly one SIGINT (a second one would make it quit without cleaning up).
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        slipway = cls(process=process, home=home, url=url, admin_key="", log_path=log_path, keep_home=keep_home)
        try:
            slipway.admin_key = slipway._wait_until_serving()
        except BaseException:
            slipway.stop()
            raise
        return slipway

    def _wait_until_serving(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        key_file = self.home / "admin.key"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StartError(f"`slipway up` exited with code {self.process.returncode}; see {self.log_path}")
            if key_file.is_file() and key_file.read_text().strip():
                key = key_file.read_text().strip()
                try:
                    answer = httpx.get(f"{self.url}/api/v1/models", headers={"Authorization": f"Bearer {key}"},
                                       timeout=5.0)
                    if answer.status_code == 200:
                        return key
                except httpx.TransportError:
                    pass
            time.sleep(0.3)
        raise StartError(f"`slipway up` did not answer within {START_TIMEOUT_SECONDS:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        """Ctrl-C for `slipway up` (it stops its replicas and checkpoints jobs), then remove the home."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self.keep_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> LocalSlipway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
