"""What the engine hands back: per step, the new tokens and text of each request that advanced."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True)
class TokenLogprob:
    """The chosen token's log-probability under the model, and the top alternatives."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()
    """(token id, log-probability) of the most likely tokens, most likely first."""


@dataclass
class CompletionOutput:
    """One choice of a request. In a step's output, fields hold what is new since the last step."""

    index: int
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    """The stop string or stop token id that ended the choice, if one did."""

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def merge(self, delta: "CompletionOutput") -> None:
        """Append a later step's delta to this accumulated output."""
        self.token_ids.extend(delta.token_ids)
        self.text += delta.text
        if delta.logprobs is not None:
            self.logprobs = (self.logprobs or []) + delta.logprobs
        if delta.finish_reason is not None:
            self.finish_reason, self.stop_reason = delta.finish_reason, delta.stop_reason


@dataclass
class RequestOutput:
    """A request's progress in one step: only the choices that advanced are listed."""

    request_id: str
    outputs: list[CompletionOutput]
    finished: bool
    """True once every choice of the request has finished."""
    num_prompt_tokens: int
    num_cached_tokens: int = 0
    """Prompt tokens served from the prefix cache instead of computed."""


def accumulate(deltas: list[RequestOutput]) -> RequestOutput:
    """Fold a request's step outputs into one with whole choices, ordered by index."""
    if not deltas:
        raise ValueError("no outputs to accumulate")
    choices: dict[int, CompletionOutput] = {}
    for delta in deltas:
        for output in delta.outputs:
            choices.setdefault(output.index, CompletionOutput(index=output.index)).merge(output)
    last = deltas[-1]
    return RequestOutput(
        request_id=last.request_id,
        outputs=[choices[i] for i in sorted(choices)],
        finished=last.finished,
        num_prompt_tokens=last.num_prompt_tokens,
        num_cached_tokens=max(d.num_cached_tokens for d in deltas),
    )
