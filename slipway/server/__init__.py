"""The replica's HTTP server: one model package, one runtime, served on 127.0.0.1.

    app.py          ReplicaApp: the ASGI routes (health, predict, OpenAI, metrics, stats, drain)
    http.py         bounded body reading, JSON and SSE responses
    state.py        ServingState: loading / ready / failed / draining and the work in flight
    metrics.py      the replica's Prometheus metrics
    llm_metrics.py  the LLM engine's `slipway_llm_*` metrics, read from the runtime at each scrape
    config.py       ServerConfig and the command line
    process.py      bind, port file, background load, SIGTERM drain, exit codes

Run one with `python -m slipway.server --package DIR --port 0 --port-file PATH`.
"""

from slipway.server.app import ReplicaApp
from slipway.server.config import ServerConfig

__all__ = ["ReplicaApp", "ServerConfig"]
