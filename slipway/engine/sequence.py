"""A sequence: one choice of one request, from waiting through running to finished.

A request with `n` choices becomes `n` sequences with the same request id. A sequence's tokens
are its prompt followed by its output; `num_computed_tokens` of them have keys and values in
the cache. Each step computes the next chunk of the rest:

    token_ids:  [ p0 p1 p2 ... p9 | o0 o1 ]  + spec_token_ids [d0 d1]  (drafts, this step only)
                  └── computed ──────┘└─ next step: o1 (+ drafts) ─┘
"""

from __future__ import annotations

import enum
from typing import Sequence as Seq

import torch

from slipway.engine.detokenizer import IncrementalDetokenizer
from slipway.engine.kv.hashing import ROOT_HASH
from slipway.engine.lora.adapter import LoraAdapter
from slipway.engine.outputs import FinishReason, TokenLogprob
from slipway.engine.sampling_params import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    """State of one choice; the scheduler and engine move it, the runner only reads it."""

    def __init__(self, seq_id: int, request_id: str, index: int, prompt_token_ids: Seq[int],
                 params: SamplingParams, arrival: int, *, generator: torch.Generator | None = None,
                 detokenizer: IncrementalDetokenizer | None = None, lora: LoraAdapter | None = None) -> None:
        self.seq_id = seq_id
        self.request_id = request_id
        self.index = index
        self.arrival = arrival
        """Order of arrival (a counter): waiting and running queues are kept in this order."""
        self.params = params
        self.lora = lora
        """The LoRA adapter applied to every token of this sequence; None: the base model."""
        self.token_ids: list[int] = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0
        """Prompt tokens found in the prefix cache at first scheduling."""
        self.spec_token_ids: list[int] = []
        self.long_prefill_deferrals = 0
        """Steps in a row this long prompt sat out while short ones went first (see the scheduler)."""
        self.status = SequenceStatus.WAITING
        self.generator = generator
        self.detokenizer = detokenizer
        self.logprobs: list[TokenLogprob] | None = [] if params.logprobs is not None else None
        self.finish_reason: FinishReason | None = None
        self.stop_reason: str | int | None = None
        self.num_sent_tokens = 0
        """Output tokens already handed to the caller (the rest go in the next step's delta)."""
        self.finish_sent = False
        self.pending_children: list["Sequence"] = []
        """Other choices of the request, started once this one's prompt is computed (n > 1)."""

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def root_hash(self) -> int:
        """The parent hash of its first KV block: an adapter's own seed, so its blocks are never
        shared with the base's or another adapter's."""
        return self.lora.root_hash if self.lora is not None else ROOT_HASH

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def is_decoding(self) -> bool:
        """Everything but the last sampled token is in the cache: the next step is one decode."""
        return self.num_computed_tokens == self.num_tokens - 1 and self.num_output_tokens > 0

    def __repr__(self) -> str:
        return (f"Sequence(id={self.seq_id}, request={self.request_id!r}, index={self.index}, "
                f"status={self.status.value}, tokens={self.num_tokens}, computed={self.num_computed_tokens})")
