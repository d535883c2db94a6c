"""What one benchmark run does: the target server, the dataset, the arrivals and the SLOs.

`BenchConfig` is the whole description of a run; it is written into the JSON report so a result
always says how it was produced (minus the API key). `parse_goodput` turns the command line's
`ttft:500 tpot:50` into the `goodput` mapping.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from slipway.errors import SpecError

Endpoint = Literal["chat", "completions"]
DatasetName = Literal["random", "multi-turn", "trace"]
ArrivalName = Literal["rate", "trace"]

# Each SLO bounds one per-request metric, in milliseconds.
SLO_METRICS = ("ttft", "tpot", "e2el")

ENDPOINT_PATHS: dict[str, str] = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


class BenchConfig(BaseModel):
    """One run of `slipway bench serve`."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="strings")

    # --- target ---
    base_url: str = Field(
        "http://127.0.0.1:8000",
        description="Root URL of the OpenAI-compatible server; the endpoint path is appended.")
    endpoint: Endpoint = Field("chat", description="chat -> /v1/chat/completions, completions -> /v1/completions.")
    model: str | None = Field(
        None,
        description="The request's `model` field; None asks GET /v1/models and takes the first.")
    api_key: str | None = Field(
        None, exclude=True, repr=False,
        description="Sent as `Authorization: Bearer`; never written to the report.")
    ignore_eos: bool = Field(
        True,
        description="Send `ignore_eos: true` so outputs run to max_tokens (vLLM, slipway; others ignore or reject it).")
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra JSON fields merged into every request body.")

    # --- dataset ---
    dataset: DatasetName = Field(
        "random",
        description="random | multi-turn (shared-prefix chats) | trace (lengths from --trace).")
    num_prompts: int = Field(100, ge=1, le=1_000_000, description="Requests of the random dataset.")
    input_len: int = Field(256, ge=1, description="Prompt tokens per request (random) or per user turn (multi-turn).")
    output_len: int = Field(128, ge=1, description="max_tokens per request (random, multi-turn).")
    range_ratio: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Lengths drawn uniformly from [len*(1-r), len*(1+r)]; 0 keeps them fixed.")
    prefix_len: int = Field(
        0, ge=0,
        description="Tokens of one prefix shared by every prompt (random) or system prompt (multi-turn).")
    num_conversations: int = Field(8, ge=1, le=100_000, description="Conversations of the multi-turn dataset.")
    num_turns: int = Field(
        4, ge=1, le=1_000,
        description="Turns per conversation; turn k resends turns 1..k-1 as its prefix.")
    tokenizer: Path | None = Field(
        None,
        description="Folder with tokenizer.json to make prompt lengths exact; None approximates by words.")
    seed: int = Field(0, description="Seed of prompt text, lengths and arrival gaps: equal seeds give equal runs.")

    # --- trace ---
    trace: Path | None = Field(None, description="Azure CSV or Mooncake JSONL trace: arrival times and/or lengths.")
    trace_speedup: float = Field(1.0, gt=0, description="Replay the trace this many times faster (2 halves every gap).")
    trace_max_requests: int = Field(1000, ge=1, le=1_000_000, description="Replay only the trace's first N requests.")
    trace_block_size: int = Field(
        512, ge=1, le=512,
        description="Tokens per Mooncake hash block in the prompts sent; the trace's 512-token blocks shrink to this.")
    max_total_len: int | None = Field(
        2048, ge=2,
        description="Trace-shaped input+output above this shrink proportionally to fit a model's context; None keeps them.")

    # --- arrivals ---
    arrival: ArrivalName | None = Field(
        None,
        description="rate (Poisson at request_rate) | trace (the trace's timestamps); None: trace if --trace else rate.")
    request_rate: float = Field(
        math.inf, gt=0,
        description="Mean requests per second of the Poisson arrivals; inf sends all at once.")
    burstiness: float = Field(
        1.0, gt=0,
        description="Gamma shape of the gaps: 1 is Poisson, below 1 burstier, above 1 more even.")
    max_concurrency: int | None = Field(
        None, ge=1, le=100_000,
        description="Requests in flight at most (closed loop with request_rate inf); None: no cap.")

    # --- measurement ---
    goodput: dict[str, float] = Field(
        default_factory=dict,
        description="SLOs in ms by metric (ttft, tpot, e2el); goodput counts requests meeting all.")
    request_timeout_s: float = Field(
        600.0, gt=0,
        description="Longest a whole request may take before it counts as failed.")
    read_timeout_s: float = Field(
        120.0, gt=0,
        description="Longest wait for the next bytes of a response before it counts as failed.")
    connect_timeout_s: float = Field(10.0, gt=0, description="Longest wait to open a connection.")

    @field_validator("base_url")
    @classmethod
    def _url_shape(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not a URL; write e.g. http://127.0.0.1:8000")
        return value.rstrip("/").removesuffix("/v1")

    @field_validator("goodput")
    @classmethod
    def _known_slos(cls, value: dict[str, float]) -> dict[str, float]:
        for metric, limit in value.items():
            if metric not in SLO_METRICS:
                raise ValueError(f"unknown SLO metric {metric!r}; use one of {', '.join(SLO_METRICS)}")
            if not limit > 0:
                raise ValueError(f"SLO {metric}:{limit} must be a positive number of milliseconds")
        return value

    @model_validator(mode="after")
    def _trace_when_needed(self) -> BenchConfig:
        if self.arrival is None:
            self.arrival = "trace" if self.trace is not None else "rate"
        if self.trace is None and (self.dataset == "trace" or self.arrival == "trace"):
            raise ValueError("the trace dataset and trace arrivals need --trace PATH (an Azure .csv or Mooncake .jsonl)")
        return self

    @property
    def url(self) -> str:
        return self.base_url + ENDPOINT_PATHS[self.endpoint]


def make_config(**fields: Any) -> BenchConfig:
    """BenchConfig from keyword fields, with validation failures as one SpecError listing each."""
    try:
        return BenchConfig(**fields)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg'].removeprefix('Value error, ')}"
                    for e in exc.errors()]
        raise SpecError("the benchmark options are not valid", problems) from None


def parse_goodput(items: Sequence[str]) -> dict[str, float]:
    """{"ttft": 500.0, "tpot": 50.0} from ["ttft:500", "tpot:50"] (items may also hold several, split by space or comma)."""
    slos: dict[str, float] = {}
    for item in items:
        for part in item.replace(",", " ").split():
            metric, sep, limit = part.partition(":")
            try:
                value = float(limit) if sep else math.nan
            except ValueError:
                value = math.nan
            if metric not in SLO_METRICS or not value > 0:
                raise SpecError(f"--goodput {part!r} is not an SLO; write METRIC:MILLISECONDS with METRIC one of "
                                f"{', '.join(SLO_METRICS)}, e.g. ttft:500 tpot:50")
            slos[metric] = value
    return slos
