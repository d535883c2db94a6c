"""`GatewayConfig`: every knob of the data plane, with its unit and default."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class GatewayConfig(BaseModel):
    """Limits, timeouts, retry and metering settings of one gateway process."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(
        10 * 1024 * 1024, ge=1, description="Largest request body accepted; larger bodies get 413.")
    connect_timeout: float = Field(
        5.0, gt=0, description="Seconds to open a TCP connection to a replica before trying another.")
    first_byte_timeout: float = Field(
        120.0, gt=0, description="Seconds from sending a request to a replica (connecting included) to its "
                                 "response headers. Past it the request is retried once on another replica, "
                                 "then answered 504.")
    request_timeout: float = Field(
        600.0, gt=0, description="Seconds one call to a replica may take in all, to the last byte of its answer. "
                                 "Past it a streamed answer ends with an error event (SSE) or an aborted "
                                 "connection, never a silently short body.")
    stream_idle_timeout: float = Field(
        300.0, gt=0, description="Seconds a response body may go without a byte before the gateway ends it, "
                                 "the same way as request_timeout.")
    pool_timeout: float = Field(
        30.0, gt=0, description="Seconds a request may wait for a free connection when a replica's pool is full.")
    retry_on_connect_failure: bool = Field(
        True, description="Retry once, on another replica, when a replica fails before sending any byte "
                          "(refused, reset, 503 while draining, or no headers within first_byte_timeout).")
    unhealthy_cooldown: float = Field(
        5.0, ge=0, description="Seconds a replica stays out of rotation once its circuit breaker opens; then "
                               "one probe request decides: a success puts it back, a failure opens the breaker "
                               "for another cooldown. A snapshot in which it turns ready again closes it at once.")
    breaker_failures: int = Field(
        3, ge=1, description="Consecutive failed requests (timeouts, 5xx answers, answers broken midway) that "
                             "open a replica's circuit breaker. A refused connection or a 503 while draining "
                             "opens it at once: nothing there can answer.")
    cold_start_timeout: float = Field(
        60.0, gt=0, description="Seconds a request for a deployment with no ready replica (scaled to zero, or "
                                "still starting) is held for one before it gets 503 with Retry-After. A held "
                                "request counts as `queued` in the gateway's load, which makes the autoscaler "
                                "start a replica.")
    max_queued_per_deployment: int = Field(
        256, ge=0, description="Most requests held per deployment while it has no ready replica; one more gets "
                               "429 with Retry-After. 0 holds none: such requests get 503 at once.")
    max_connections_per_replica: int = Field(
        512, ge=1, description="Most open connections to one replica; more requests wait up to pool_timeout.")
    max_idle_connections_per_replica: int = Field(
        64, ge=0, description="Most idle keep-alive connections kept open to one replica.")
    max_buffered_response_bytes: int = Field(
        16 * 1024 * 1024, ge=1024,
        description="Responses up to this size (by Content-Length) are read whole, which lets the gateway "
                    "read their token usage; larger ones stream through and count as 1 input, 1 output.")
    retry_after_seconds: int = Field(
        1, ge=0, description="Value of Retry-After on the gateway's own 503 (no ready replica) and 429 "
                             "(cold-start queue full) answers.")
    usage_journal_dir: Path | None = Field(
        None, description="Folder of the usage journal (e.g. $SLIPWAY_HOME/usage). Each answered request's "
                          "record is appended here before its last byte is sent, so a crash loses none. "
                          "None keeps records in memory only (lost on a crash; for tests and benchmarks).")
    usage_flush_interval: float = Field(
        0.5, gt=0, description="Seconds between writes of journaled usage records to the usage sink.")
    usage_batch_size: int = Field(
        2000, ge=1, description="Most records handed to the usage sink in one write.")
    max_pending_usage_records: int = Field(
        100_000, ge=1, description="Most records held in memory when usage_journal_dir is None; older ones "
                                   "are dropped (and logged) past this.")
    capture_journal_dir: Path | None = Field(
        None, description="Folder of the trace journal (e.g. $SLIPWAY_HOME/traces), beside the usage journal. "
                          "None keeps captured traces in memory until written (lost on a crash).")
    capture_max_bytes: int = Field(
        1024 * 1024, ge=1024, description="Most bytes of a request and of a response kept per trace; a larger one "
                                          "is stored cut, as text, with a `slipway_truncated` marker.")
    capture_flush_interval: float = Field(
        0.5, gt=0, description="Seconds between writes of journaled traces to the trace sink.")
    capture_batch_size: int = Field(
        200, ge=1, description="Most traces handed to the trace sink in one write.")
    max_pending_trace_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="Most bytes of captured traces waiting for the capture worker; traces "
                                            "past it are dropped (and counted) rather than slowing requests.")
    max_pending_traces: int = Field(
        10_000, ge=1, description="Most traces held in memory when capture_journal_dir is None.")
    trace_redactor: str | None = Field(
        None, description="Applied to each captured request and response before it is journaled: a built-in by "
                          "name ('mask_pii': e-mail addresses and long digit runs) or a 'module:function' path "
                          "to a callable taking and returning a JSON value. None stores them as sent.")
    snapshot_poll_timeout: float = Field(
        30.0, gt=0, description="Seconds one long poll for a newer routing snapshot may wait.")
    replica_stats_interval: float = Field(
        1.0, gt=0, description="Seconds between reads of GET /stats from each ready replica of a kv_aware "
                               "deployment, for the KV blocks it reports holding. Other deployments are not read.")
    replica_stats_timeout: float = Field(
        0.5, gt=0, description="Seconds one read of a replica's /stats may take; a replica that misses it keeps "
                               "its last report until it is three intervals old, then routes as unknown.")
    max_tokenizers: int = Field(
        8, ge=1, description="Tokenizers of kv_aware deployments kept in memory (each a few MB to tens of MB); "
                             "the least recently used is dropped beyond this and fetched again when needed.")
    tokenizer_fetch_timeout: float = Field(
        30.0, gt=0, description="Seconds to fetch a kv_aware deployment's tokenizer from a replica (GET /tokenizer). "
                                "Until it is built, that deployment's requests are routed by load alone.")
    tokenizer_retry_interval: float = Field(
        10.0, gt=0, description="Seconds before fetching a tokenizer again after a failed fetch or build.")
    operator_workspace_id: str | None = Field(
        None, description="Admin keys of this workspace read /internal/load for every workspace; other admin "
                          "keys see only their own deployments.")
