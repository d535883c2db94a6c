"""One usage record per request answered (or refused) through the gateway."""

from __future__ import annotations

from pydantic import BaseModel, Field


class UsageRecord(BaseModel):
    request_id: str = Field(description="Unique per request; makes re-inserting a record a no-op.")
    workspace_id: str
    key_id: str | None = None
    model_name: str
    deployment_id: str | None = None
    environment: str | None = None
    route: str = Field(description="e.g. 'predict', 'embeddings', 'chat.completions'.")
    input_units: int = Field(0, description="Input tokens, or inputs for non-token models.")
    output_units: int = Field(0, description="Output tokens, or outputs for non-token models.")
    latency_ms: float = 0.0
    status_code: int = 200
    created_at: float = Field(description="Unix time the request arrived.")
