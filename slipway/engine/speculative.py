"""Prompt-lookup speculative decoding: n-gram drafts from the sequence's own tokens.

If the last few tokens appeared earlier in the sequence (prompt or output), the tokens that
followed them then are a cheap guess at what follows now. The guesses ride along with the
sequence's decode token in the next forward (one batched forward for all sequences); the
logits at each position verify them:

    tokens ... a b c [x]     drafts d0 d1 d2      forward computes x d0 d1 d2
    sampled from logits at:   x → t0   d0 → t1   d1 → t2   d2 → t3
    accept d0 if t0 == d0, then d1 if t1 == d1, ...; the first mismatch t_i replaces d_i

so a step yields between 1 and len(drafts) + 1 tokens. Only greedy requests without penalties
get drafts: their token at each position depends on the logits alone, which makes the output
identical to decoding one token at a time.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Sequence

_ITEM = array("i").itemsize


def propose_ngram_drafts(token_ids: Sequence[int], *, num_drafts: int, min_ngram: int = 1,
                         max_ngram: int = 3) -> list[int]:
    """Up to `num_drafts` tokens that followed the latest earlier match of the sequence's tail.

    Tries the longest tail first (max_ngram tokens), then shorter ones down to min_ngram; the
    most recent earlier occurrence wins.
    """
    if num_drafts < 1 or len(token_ids) < min_ngram + 1:
        return []
    # A byte string of fixed-width tokens lets the search run in C (bytes.rfind).
    haystack = array("i", token_ids).tobytes()
    total = len(token_ids)
    for n in range(min(max_ngram, total - 1), min_ngram - 1, -1):
        pattern = haystack[(total - n) * _ITEM:]
        # Occurrences must end before the last token, so at least one token follows them.
        end = (total - 1) * _ITEM
        while True:
            found = haystack.rfind(pattern, 0, end)
            if found == -1:
                break
            if found % _ITEM == 0:
                start = found // _ITEM + n
                return list(token_ids[start:start + num_drafts])
            end = found + len(pattern) - 1
    return []


def accepted_prefix_len(draft_token_ids: Sequence[int], sampled_token_ids: Sequence[int]) -> int:
    """How many drafts the target model agrees with, in order (sampled has one more entry)."""
    accepted = 0
    for draft, sampled in zip(draft_token_ids, sampled_token_ids):
        if draft != sampled:
            break
        accepted += 1
    return accepted


@dataclass
class SpeculativeCounters:
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else 0.0
