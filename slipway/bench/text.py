"""Synthetic prompt text of a requested token length, with no tokenizer needed at bench time.

Text is a run of common English words, each a single token (with its leading space) in the
BPE and SentencePiece vocabularies of the usual LLM families, so N words come to about N tokens.
Text is a pure function of a seed string: equal seeds give equal text, which is how prompts
share prefixes (one shared prefix, a Mooncake hash block, the earlier turns of a chat).

Given a folder with a `tokenizer.json` (`--tokenizer`), lengths become exact: the pieces are
token ids cut to the count, and the text is their decoding.

    maker = TextMaker()                      # or TextMaker.from_folder(path)
    pieces = maker.pieces("block-7", 16)     # 16 words (or 16 token ids)
    prompt = maker.render(pieces)
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from slipway.errors import NotFoundError, SpecError

WORDS: tuple[str, ...] = (
    "the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "it", "at", "by",
    "from", "his", "her", "they", "be", "this", "have", "are", "not", "but", "had", "which", "one",
    "all", "were", "when", "there", "can", "an", "so", "what", "their", "if", "would", "about",
    "out", "up", "them", "some", "could", "time", "into", "only", "other", "new", "more", "these",
    "two", "may", "first", "then", "do", "any", "like", "my", "now", "over", "such", "our", "man",
    "me", "even", "most", "made", "after", "also", "did", "many", "before", "must", "through",
    "back", "years", "where", "much", "your", "way", "well", "down", "should", "because", "each",
    "just", "those", "people", "how", "too", "little", "state", "good", "very", "make", "world",
    "still", "own", "see", "men", "work", "long", "get", "here", "between", "both", "life", "being",
    "under", "never", "day", "same", "another", "know", "while", "last", "might", "us", "great",
    "old", "year", "off", "come", "since", "go", "came", "right", "used", "take", "three", "home",
    "small", "found", "house", "part", "place", "water", "hand", "high", "light", "city", "name",
    "end", "line", "side", "book", "game", "road", "fire", "power", "money", "music", "story",
)

# With a tokenizer, words are encoded with some slack, doubling a few times if still short.
_TOKENIZER_SLACK_WORDS = 8
_TOKENIZER_ROUNDS = 4


def words(seed: str, count: int) -> list[str]:
    """`count` words drawn from WORDS, a pure function of `seed`."""
    return random.Random(seed).choices(WORDS, k=count)


class TextMaker:
    """Makes text of a token length: about `count` tokens from words, or exactly with a tokenizer.

    Pieces are words without a tokenizer and token ids with one; `pieces` and `render` are the
    only two verbs, so callers can cut and join pieces (prefix blocks, truncation) in between.
    """

    def __init__(self, tokenizer: Any | None = None) -> None:
        self._tokenizer = tokenizer

    @classmethod
    def from_folder(cls, folder: Path | None) -> TextMaker:
        """A TextMaker over `folder/tokenizer.json`, or the word approximation when folder is None."""
        if folder is None:
            return cls()
        path = Path(folder)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise NotFoundError(f"--tokenizer {folder}: no tokenizer.json there; pass a Hugging Face model folder "
                                "that has one, or leave --tokenizer out to approximate lengths by words")
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(file))
        except Exception as exc:  # the tokenizers library raises its own untyped errors
            raise SpecError(f"--tokenizer {file}: could not be read ({exc}); pass a valid tokenizer.json") from None
        # Some tokenizer.json files pad or truncate every encoding to a fixed length; counts need neither.
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return cls(tokenizer)

    @property
    def exact(self) -> bool:
        """True when lengths are counted by a tokenizer rather than approximated by words."""
        return self._tokenizer is not None

    def pieces(self, seed: str, count: int) -> list[Any]:
        """`count` pieces (words, or token ids with a tokenizer) that depend only on `seed`."""
        if count <= 0:
            return []
        if self._tokenizer is None:
            return words(seed, count)
        num_words = count + _TOKENIZER_SLACK_WORDS
        for _ in range(_TOKENIZER_ROUNDS):
            ids = self._tokenizer.encode(" ".join(words(seed, num_words)), add_special_tokens=False).ids
            if len(ids) >= count:
                return ids[:count]
            num_words *= 2
        raise SpecError(f"the tokenizer makes fewer than {count} tokens of {num_words} words; "
                        "pass the model's own tokenizer folder with --tokenizer")

    def render(self, pieces: list[Any]) -> str:
        """The text of `pieces`."""
        if self._tokenizer is None:
            return " ".join(pieces)
        return self._tokenizer.decode(pieces, skip_special_tokens=True)

    def text(self, seed: str, count: int) -> str:
        """About `count` tokens of text (exactly `count` with a tokenizer) that depend only on `seed`."""
        return self.render(self.pieces(seed, count))

    def count(self, text: str) -> int | None:
        """Tokens in `text` by the tokenizer; None without one."""
        if self._tokenizer is None:
            return None
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)
