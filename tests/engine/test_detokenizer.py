"""Incremental text and stop strings over a real Hugging Face tokenizer."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from slipway.engine.detokenizer import IncrementalDetokenizer


@pytest.fixture(scope="module")
def tokenizer(llama_checkpoint):
    return AutoTokenizer.from_pretrained(llama_checkpoint[0])


def feed(detok: IncrementalDetokenizer, ids: list[int]) -> tuple[list[str], str | None]:
    deltas, stop = [], None
    for token_id in ids:
        stop = detok.add_token(token_id)
        deltas.append(detok.take_delta(finished=stop is not None))
        if stop:
            break
    return deltas, stop


def test_deltas_add_up_to_the_decoded_text(tokenizer):
    ids = tokenizer.encode("hello world, the end")
    detok = IncrementalDetokenizer(tokenizer, [5, 6])
    deltas, stop = feed(detok, ids)
    assert stop is None and "".join(deltas) == "hello world, the end"


def test_stop_string_across_tokens_is_held_back_then_cut(tokenizer):
    detok = IncrementalDetokenizer(tokenizer, [5], stop=["xyz"])
    deltas, stop = feed(detok, tokenizer.encode("abxyzcd"))
    assert stop == "xyz"
    assert "".join(deltas) == "ab" == detok.text
    assert all("x" not in d for d in deltas), "text that may start a stop string is never sent early"


def test_earliest_stop_wins(tokenizer):
    detok = IncrementalDetokenizer(tokenizer, [5], stop=["cd", "bc"])
    _, stop = feed(detok, tokenizer.encode("abcd"))
    assert stop == "bc" and detok.text == "a"


def test_special_tokens_are_skipped_on_request(tokenizer):
    eos = tokenizer.eos_token_id
    plain = IncrementalDetokenizer(tokenizer, [5])
    assert "".join(feed(plain, tokenizer.encode("ab") + [eos])[0]) == "ab"
    raw = IncrementalDetokenizer(tokenizer, [5], skip_special_tokens=False)
    feed(raw, tokenizer.encode("ab") + [eos])
    raw.flush()
    assert raw.text == "ab</s>"
