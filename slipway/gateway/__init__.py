"""The data plane: authenticate, resolve, hold through cold starts, route, proxy and stream, retry, meter.

    app.py        GatewayApp / create_gateway_app: the raw ASGI app, its routes and lifespan
    base.py       SnapshotSource, UsageSink, TraceSink: what the gateway needs from the control plane and store
    config.py     GatewayConfig: limits, timeouts, retry, cold-start hold and metering settings
    table.py      RouteTable: a routing snapshot indexed for lookups; model and deployment resolution
    hold.py       ColdStartHold: requests for a deployment with no ready replica wait, bounded, for one
    health.py     ReplicaTracker: in flight per replica, a circuit breaker per replica
    tokenizer_cache.py  TokenizerCache: kv_aware deployments' tokenizers (GET /tokenizer) -> prompt block hashes
    replica_stats.py    ReplicaStatsPoller: the KV blocks kv_aware replicas report (GET /stats), every second
    replica_reads.py    get_json: one bounded GET of a replica's JSON route
    proxy.py      Proxy: pick a replica, send, retry before the first byte, relay or stream, meter
    sse.py        SseFramer and error_event: whole SSE events, and the event that ends a broken stream
    upstream.py   UpstreamPool: the lean keep-alive HTTP/1.1 client to replicas
    metrics.py    GatewayMetrics: the Prometheus registry (cold-start histogram) and recent cold starts
    meter.py      UsageMeter: usage records through the journal to the sink, in a worker thread
    capture.py    TraceCapture: traces of capturing deployments through a journal of their own to a TraceSink
    redact.py     trace redactors: the built-in mask_pii, or any "module:function"
    journal.py    DiskJournal / MemoryJournal: append-only segments that survive a crash
    snapshots.py  StaticSnapshotSource, HttpSnapshotSource
    http.py       ASGI plumbing: headers, bounded body reads, JSON answers
    serve.py      run a gateway process under uvicorn (`python -m slipway.gateway`)
"""

from slipway.gateway.app import GatewayApp, create_gateway_app
from slipway.gateway.base import SnapshotSource, StoreTraceSink, StoreUsageSink, TraceSink, UsageSink
from slipway.gateway.config import GatewayConfig
from slipway.gateway.snapshots import HttpSnapshotSource, StaticSnapshotSource

__all__ = [
    "GatewayApp", "create_gateway_app", "GatewayConfig", "SnapshotSource", "UsageSink", "StoreUsageSink",
    "TraceSink", "StoreTraceSink",
    "StaticSnapshotSource", "HttpSnapshotSource",
]
