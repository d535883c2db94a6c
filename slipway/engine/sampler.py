"""From logits to tokens: penalties, temperature, top-k, top-p, min-p, seeded draws, logprobs.

All rows of a step are sampled together; per-row work happens only where a row asks for it
(a seed, penalties). Order of operations, per row:

    raw logits ──► logprobs (reported, of the model's own distribution)
        └──► ends suppressed (short of min_tokens) ──► presence/frequency penalties
                 ├──► greedy: argmax
                 └──► / temperature ──► top-k ──► top-p ──► min-p ──► draw

A draw inverts the cumulative distribution: one uniform number u per row, and the token is the
first whose running sum of probabilities exceeds u times the total. That takes one random number
per row, not one per vocabulary entry: over a 49k vocabulary an exponential race (argmax of p / E)
spent ~15 ms a step on CPU drawing E, the inversion ~0.4 ms. A seeded row draws its u from its own
`torch.Generator`, so a seed reproduces its output whatever else shares the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from slipway.engine.outputs import TokenLogprob
from slipway.engine.sampling_params import SamplingParams


@dataclass(frozen=True)
class SamplingRow:
    """What the sampler needs to know about the sequence behind one logits row."""

    params: SamplingParams
    output_token_ids: Sequence[int] = ()
    generator: torch.Generator | None = None
    suppressed_token_ids: Sequence[int] = ()
    """Tokens this row may not sample (the ends of a sequence short of its min_tokens)."""


@dataclass(frozen=True)
class SampledToken:
    token_id: int
    logprob: TokenLogprob | None = None


def apply_penalties(logits: torch.Tensor, output_token_ids: Sequence[Sequence[int]],
                    presence: torch.Tensor, frequency: torch.Tensor) -> None:
    """In place: subtract presence (once per seen token) and frequency (per occurrence) penalties."""
    vocab = logits.shape[-1]
    for row, tokens in enumerate(output_token_ids):
        if not tokens:
            continue
        counts = torch.bincount(torch.tensor(tokens, device=logits.device), minlength=vocab)[:vocab]
        logits[row] -= frequency[row] * counts + presence[row] * (counts > 0)


def apply_top_k(logits: torch.Tensor, top_k: torch.Tensor) -> None:
    """In place: keep each row's k largest logits (ties at the k-th kept); k == 0 keeps all."""
    vocab = logits.shape[-1]
    k = torch.where(top_k <= 0, vocab, top_k).clamp(max=vocab)
    kth = logits.sort(dim=-1, descending=True).values.gather(1, (k - 1)[:, None])
    logits.masked_fill_(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, top_p: torch.Tensor) -> None:
    """In place: keep each row's smallest set of most likely tokens whose probability reaches top_p."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    # A token goes if the tokens before it already reach top_p; the most likely always stays.
    remove_sorted = (probs.cumsum(dim=-1) - probs) > top_p[:, None]
    remove_sorted[top_p >= 1.0] = False
    remove = torch.zeros_like(remove_sorted).scatter_(1, order, remove_sorted)
    logits.masked_fill_(remove, float("-inf"))


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> None:
    """In place: drop tokens whose probability is below min_p times the row's largest."""
    probs = logits.softmax(dim=-1)
    threshold = min_p[:, None] * probs.max(dim=-1, keepdim=True).values
    logits.masked_fill_(probs < threshold, float("-inf"))


class Sampler:
    """Samples one token per logits row; see the module docstring."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator
        """Randomness for rows without a seed (None: torch's global generator)."""

    def sample(self, logits: torch.Tensor, rows: Sequence[SamplingRow]) -> list[SampledToken]:
        """logits [len(rows), vocab] float32 -> one token per row."""
        if logits.shape[0] != len(rows):
            raise ValueError(f"{logits.shape[0]} logits rows for {len(rows)} sampling rows")
        if not rows:
            return []
        logprob_rows = [i for i, r in enumerate(rows) if r.params.logprobs is not None]
        raw_logprobs = logits[logprob_rows].log_softmax(dim=-1) if logprob_rows else None
        device = logits.device

        penalized = [i for i, r in enumerate(rows) if r.params.has_penalties]
        suppressing = [i for i, r in enumerate(rows) if r.suppressed_token_ids]
        if penalized or suppressing:
            logits = logits.clone()  # the caller's logits stay as the model made them
        for i in suppressing:
            logits[i, list(rows[i].suppressed_token_ids)] = float("-inf")
        if penalized:
            sub = logits[penalized]
            apply_penalties(
                sub, [rows[i].output_token_ids for i in penalized],
                torch.tensor([rows[i].params.presence_penalty for i in penalized], device=device),
                torch.tensor([rows[i].params.frequency_penalty for i in penalized], device=device),
            )
            logits[penalized] = sub

        random_rows = [i for i, r in enumerate(rows) if not r.params.is_greedy]
        if len(random_rows) == len(rows):  # no argmax over a vocabulary per row, nor a copy of the rows
            token_ids = self._draw(logits, rows)
        else:
            token_ids = logits.argmax(dim=-1)
            if random_rows:
                token_ids[random_rows] = self._draw(logits[random_rows], [rows[i] for i in random_rows])

        chosen = token_ids.tolist()
        logprobs: list[TokenLogprob | None] = [None] * len(rows)
        for position, i in enumerate(logprob_rows):
            logprobs[i] = _token_logprob(raw_logprobs[position], chosen[i], rows[i].params.logprobs or 0)
        return [SampledToken(token_id, logprob) for token_id, logprob in zip(chosen, logprobs)]

    def _draw(self, logits: torch.Tensor, rows: Sequence[SamplingRow]) -> torch.Tensor:
        """One token per row of `logits`, which is not changed (filters work on a copy)."""
        device = logits.device
        temperatures = [r.params.temperature for r in rows]
        filtered = any(r.params.top_k > 0 or r.params.top_p < 1.0 or r.params.min_p > 0.0 for r in rows)
        if filtered or any(t != 1.0 for t in temperatures):
            logits = logits / torch.tensor(temperatures, device=device)[:, None]
        if any(r.params.top_k > 0 for r in rows):
            apply_top_k(logits, torch.tensor([r.params.top_k for r in rows], device=device))
        if any(r.params.top_p < 1.0 for r in rows):
            apply_top_p(logits, torch.tensor([r.params.top_p for r in rows], device=device))
        if any(r.params.min_p > 0.0 for r in rows):
            apply_min_p(logits, torch.tensor([r.params.min_p for r in rows], device=device))
        cumulative = logits.softmax(dim=-1).cumsum_(dim=-1)
        uniform = torch.empty(len(rows), 1, device=device)
        unseeded = [i for i, r in enumerate(rows) if r.generator is None]
        if unseeded:
            uniform[unseeded] = torch.rand(len(unseeded), 1, device=device, generator=self.generator)
        for i, row in enumerate(rows):
            if row.generator is not None:
                uniform[i] = torch.rand(1, device=device, generator=row.generator)
        # Scaled by each row's own total, which float32 sums leave a hair away from 1; masked-out
        # tokens add nothing to the running sum, so the first index past u is never one of them.
        targets = uniform * cumulative[:, -1:]
        return torch.searchsorted(cumulative, targets, right=True).squeeze(1).clamp_(max=cumulative.shape[1] - 1)


def _token_logprob(logprobs: torch.Tensor, token_id: int, num_top: int) -> TokenLogprob:
    top: tuple[tuple[int, float], ...] = ()
    if num_top > 0:
        values, ids = logprobs.topk(num_top)
        top = tuple(zip(ids.tolist(), values.tolist()))
    return TokenLogprob(token_id=token_id, logprob=float(logprobs[token_id]), top=top)
