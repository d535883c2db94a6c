"""What was measured of one request (`RequestRecord`); times in milliseconds."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RequestRecord(BaseModel):
    """One request's outcome: when it went, what came back, how fast."""

    index: int = Field(description="The request's position in the dataset.")
    success: bool = Field(description="A 200 stream that carried at least one token and no error.")
    error: str | None = Field(None, description="Why it failed: HTTP status and message, timeout, or connection error.")
    status: int | None = Field(None, description="HTTP status; None when no response came.")
    released_ms: float = Field(description="When arrivals released it, since the run's start.")
    sent_ms: float = Field(description="When it was sent (after waiting for a concurrency slot or an earlier turn).")
    ended_ms: float = Field(description="When its response ended or it failed, since the run's start.")
    input_tokens: int = Field(description="Prompt tokens: the server's usage count, else the dataset's.")
    output_tokens: int = Field(0, description="usage.completion_tokens when sent, else the chunks that carried text.")
    expected_output_tokens: int = Field(description="max_tokens sent.")
    usage_reported: bool = Field(False, description="The stream ended with a usage object.")
    ttft_ms: float | None = Field(None, description="Send to the first chunk carrying text.")
    e2el_ms: float | None = Field(None, description="Send to the end of the stream.")
    tpot_ms: float | None = Field(None, description="(e2el - ttft) / (output_tokens - 1); None for one token.")
    itl_ms: list[float] = Field(default_factory=list, description="Gaps between consecutive chunks carrying text.")
