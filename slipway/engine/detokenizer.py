"""Incremental detokenization and stop strings, one sequence at a time.

Decoding token by token cannot simply concatenate per-token strings: byte-level BPE splits
characters across tokens, and SentencePiece drops a token's leading space when it is decoded
alone. So each new token is decoded together with a few before it, and only the text beyond
what those already produced is new; text ending in an incomplete character waits for the next
token. Text that might be the start of a stop string is held back until it is known not to be.
"""

from __future__ import annotations

from typing import Protocol, Sequence

# Prompt tokens decoded with the first output tokens, for context (leading spaces, merges).
_CONTEXT_TOKENS = 5
_INCOMPLETE = "\ufffd"


class Tokenizer(Protocol):
    """What the engine needs of a tokenizer (a Hugging Face tokenizer has it)."""

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalDetokenizer:
    """Turns one sequence's output tokens into text deltas and watches for stop strings."""

    def __init__(self, tokenizer: Tokenizer, prompt_token_ids: Sequence[int], *,
                 stop: Sequence[str] = (), skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.stop = tuple(stop)
        self._hold_back = max((len(s) for s in self.stop), default=1) - 1
        self._ids = list(prompt_token_ids[-_CONTEXT_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        self.text = ""
        """All text so far (cut at a stop string once one is found)."""
        self.stopped_by: str | None = None
        self._num_sent = 0

    def add_token(self, token_id: int, *, watch_stops: bool = True) -> str | None:
        """Add one output token; return the stop string it completed, if any (none is looked for
        while `watch_stops` is False: a sequence short of its min_tokens)."""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset:self._read_offset])
        full = self._decode(self._ids[self._prefix_offset:])
        if len(full) <= len(prefix) or full.endswith(_INCOMPLETE):
            return None
        new_text = full[len(prefix):]
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        if not watch_stops:
            self.text += new_text
            return None
        return self._append(new_text)

    def flush(self) -> None:
        """At the end: take whatever text is pending, even an incomplete character."""
        if self.stopped_by is not None:
            return
        full = self._decode(self._ids[self._prefix_offset:])
        prefix = self._decode(self._ids[self._prefix_offset:self._read_offset])
        if len(full) > len(prefix):
            self._append(full[len(prefix):])
        self._read_offset = len(self._ids)

    def take_delta(self, *, finished: bool) -> str:
        """Text not yet handed out, minus a tail that could still become a stop string."""
        end = len(self.text) if finished else max(self._num_sent, len(self.text) - self._hold_back)
        delta = self.text[self._num_sent:end]
        self._num_sent = end
        return delta

    def _append(self, new_text: str) -> str | None:
        start = max(0, len(self.text) - self._hold_back)
        self.text += new_text
        hits = [(found, stop) for stop in self.stop if (found := self.text.find(stop, start)) != -1]
        if not hits:
            return None
        found, stop = min(hits)
        self.text = self.text[:found]
        self.stopped_by = stop
        return stop

    def _decode(self, token_ids: Sequence[int]) -> str:
        if not token_ids:
            return ""
        return self.tokenizer.decode(token_ids, skip_special_tokens=self.skip_special_tokens)
