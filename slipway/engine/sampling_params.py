"""How one request is sampled and when it stops: `SamplingParams`, validated up front."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_STOP_STRINGS = 16
MAX_STOP_STRING_CHARS = 256


class SamplingParams(BaseModel):
    """Per-request sampling and stopping settings (OpenAI's names where they exist)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(1, ge=1, le=16, description="Completions to generate for the prompt; they share its KV blocks.")
    max_tokens: int | None = Field(
        None, ge=1, description="Most tokens to generate; None runs until a stop or max_model_len."
    )
    temperature: float = Field(1.0, ge=0.0, le=10.0, description="Softmax temperature; 0 picks the most likely token.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Keep the smallest set of tokens whose probability sums to top_p.")
    top_k: int = Field(0, ge=0, description="Keep the k most likely tokens; 0 keeps all.")
    min_p: float = Field(0.0, ge=0.0, le=1.0, description="Drop tokens less likely than min_p times the most likely one.")
    seed: int | None = Field(None, description="Seed for this request's random draws; same seed, same output.")
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0, description="Subtracted from the logit of every token generated so far.")
    frequency_penalty: float = Field(
        0.0, ge=-2.0, le=2.0, description="Subtracted from a token's logit once per time it was generated so far."
    )
    stop: tuple[str, ...] = Field((), description="Strings that end the completion; they are not included in its text.")
    stop_token_ids: tuple[int, ...] = Field((), description="Token ids that end the completion (kept in token_ids).")
    ignore_eos: bool = Field(False, description="Keep generating past the model's end-of-sequence tokens.")
    min_tokens: int = Field(
        0, ge=0, description="Tokens to generate before end-of-sequence, stop_token_ids or stop strings may end the "
        "completion: until then those tokens are never sampled and stop strings are not looked for."
    )
    logprobs: int | None = Field(
        None, ge=0, le=20, description="Return the chosen token's log-probability and this many top alternatives."
    )
    skip_special_tokens: bool = Field(True, description="Leave special tokens out of the decoded text.")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: object) -> object:
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        return value

    @field_validator("stop")
    @classmethod
    def _stop_bounds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings are allowed, got {len(value)}")
        for text in value:
            if not text or len(text) > MAX_STOP_STRING_CHARS:
                raise ValueError(f"stop strings must have 1 to {MAX_STOP_STRING_CHARS} characters, got {text!r}")
        return value

    @model_validator(mode="after")
    def _min_tokens_within_max_tokens(self) -> "SamplingParams":
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(
                f"min_tokens ({self.min_tokens}) exceeds max_tokens ({self.max_tokens}); "
                "lower min_tokens or raise max_tokens"
            )
        return self

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    @property
    def has_penalties(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
