"""A stand-in replica for backend tests: the same flags and lifecycle as `python -m slipway.server`.

Binds a free 127.0.0.1 port, writes it to --port-file (atomically) once listening, answers
GET /health/live and /health/ready with 200, and exits 0 on SIGTERM. Behaviours the real server
never shows, chosen by environment variables:

    STANDIN_IGNORE_SIGTERM=1   SIGTERM is ignored (only SIGKILL ends it)
    STANDIN_CHILD_PID_FILE=P   starts a sleeping child process in its group and writes its pid to P
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        known = self.path in ("/health/live", "/health/ready")
        body = b'{"ready":true,"state":"ready"}' if known else b'{"error":{"message":"not found"}}'
        self.send_response(200 if known else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # keep the replica log short
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--package", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--replica-id", required=True)
    args = parser.parse_args()

    if os.environ.get("STANDIN_IGNORE_SIGTERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    child_pid_file = os.environ.get("STANDIN_CHILD_PID_FILE")
    if child_pid_file:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open(child_pid_file, "w") as file:
            file.write(str(child.pid))

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Health)
    tmp = f"{args.port_file}.tmp"
    with open(tmp, "w") as file:
        file.write(str(server.server_address[1]))
    os.replace(tmp, args.port_file)
    print(f"stand-in replica {args.replica_id} listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
