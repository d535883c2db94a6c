"""How long an LLM replica takes from process spawn to its first streamed token (a cold start's floor).

    python benchmarks/replica_start.py [--package examples/smollm2] [--repeat 3]

Spawns `python -m slipway.server --package PACKAGE` with a port file, waits for the port, polls
`/health/ready`, then streams one short chat completion and stops at its first data line. Prints
for each start: seconds to listening, to ready, and to the first token. Convert the weights once
before (the first start of a GGUF package converts it, which is not part of a cold start). The
gateway's hold and the control plane's reaction add to this in a scale from zero (benchmarks/burst.py
measures the whole path).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def one_start(package: Path) -> tuple[float, float, float]:
    """(listening, ready, first token) in seconds since the spawn."""
    with tempfile.TemporaryDirectory() as folder:
        port_file = Path(folder) / "port"
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, "-m", "slipway.server", "--package", str(package),
                                    "--port-file", str(port_file)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
        try:
            while not (port_file.exists() and port_file.read_text().strip()):
                if process.poll() is not None:
                    raise SystemExit(f"the replica exited with {process.returncode} before listening")
                time.sleep(0.01)
            listening = time.monotonic() - started
            url = f"http://127.0.0.1:{int(port_file.read_text())}"
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"the replica exited with {process.returncode} while loading")
                try:
                    if httpx.get(f"{url}/health/ready").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
            ready = time.monotonic() - started
            body = {"model": "any", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True}
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as response:
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        break
            return listening, ready, time.monotonic() - started
        finally:
            process.terminate()
            process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, default=REPO / "examples" / "smollm2")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for attempt in range(1, args.repeat + 1):
        listening, ready, first = one_start(args.package)
        print(f"start {attempt}: listening {listening:.2f} s, ready {ready:.2f} s, first token {first:.2f} s",
              flush=True)


if __name__ == "__main__":
    main()
