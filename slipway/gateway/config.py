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
    request_timeout: float = Field(
        300.0, gt=0, description="Seconds to wait for a replica's response headers before answering 504.")
    stream_idle_timeout: float = Field(
        300.0, gt=0, description="Seconds a response body may go without a byte before the gateway ends it.")
    pool_timeout: float = Field(
        30.0, gt=0, description="Seconds a request may wait for a free connection when a replica's pool is full.")
    retry_on_connect_failure: bool = Field(
        True, description="Retry once, on another replica, when a replica fails before sending any byte "
                          "(refused, reset, or 503 while draining).")
    unhealthy_cooldown: float = Field(
        5.0, ge=0, description="Seconds a replica that failed that way is skipped, unless a newer routing "
                               "snapshot says it is ready again.")
    max_connections_per_replica: int = Field(
        512, ge=1, description="Most open connections to one replica; more requests wait up to pool_timeout.")
    max_idle_connections_per_replica: int = Field(
        64, ge=0, description="Most idle keep-alive connections kept open to one replica.")
    max_buffered_response_bytes: int = Field(
        16 * 1024 * 1024, ge=1024,
        description="Responses up to this size (by Content-Length) are read whole, which lets the gateway "
                    "read their token usage; larger ones stream through and count as 1 input, 1 output.")
    retry_after_seconds: int = Field(
        1, ge=0, description="Value of Retry-After on 503 answers (no ready replica).")
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
    snapshot_poll_timeout: float = Field(
        30.0, gt=0, description="Seconds one long poll for a newer routing snapshot may wait.")
    operator_workspace_id: str | None = Field(
        None, description="Admin keys of this workspace read /internal/load for every workspace; other admin "
                          "keys see only their own deployments.")
