"""The loss mask: exactly the assistant spans (content plus end-of-turn), nothing of system or user turns."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from slipway.train.chat_tokens import IGNORE_INDEX, check_tokenizer, encode_row, encode_rows, render_with_spans
from slipway.train.job import JobError

from .conftest import save_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_llama):
    return AutoTokenizer.from_pretrained(tiny_llama)


def _trained_text(tokenizer, encoded) -> list[str]:
    """The trained tokens as text, one string per contiguous run of trained tokens."""
    runs, current = [], []
    for token, label in zip(encoded.input_ids, encoded.labels):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return ["".join(tokenizer.convert_ids_to_tokens(run)) for run in runs]


def test_mask_covers_exactly_each_assistant_span(tokenizer):
    row = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Add 2 and 3"},
                        {"role": "assistant", "content": "5"}]}
    encoded = encode_row(tokenizer, row, max_seq_len=512)
    text = "".join(tokenizer.convert_ids_to_tokens(encoded.input_ids))
    assert text == "<system>Be brief.</s><user>Hi</s><assistant>Hello!</s><user>Add 2 and 3</s><assistant>5</s>"
    assert _trained_text(tokenizer, encoded) == ["Hello!</s>", "5</s>"]
    assert encoded.num_trained_tokens == len("Hello!") + 1 + len("5") + 1


def test_weight_zero_turns_and_trailing_turns_are_not_trained(tokenizer):
    row = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "skip", "weight": 0},
                        {"role": "user", "content": "b"}, {"role": "assistant", "content": "keep"},
                        {"role": "user", "content": "trailing"}]}
    encoded = encode_row(tokenizer, row, max_seq_len=512)
    assert _trained_text(tokenizer, encoded) == ["keep</s>"]
    # The turn after the last trained answer is not even rendered.
    assert "".join(tokenizer.convert_ids_to_tokens(encoded.input_ids)).endswith("<assistant>keep</s>")


def test_list_content_is_joined_like_the_validator_reads_it(tokenizer):
    row = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]},
                        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]}]}
    assert _trained_text(tokenizer, encode_row(tokenizer, row, 512)) == ["ok</s>"]


def test_truncation_cuts_the_end_and_rows_left_without_trained_tokens_are_reported(tokenizer):
    long_prompt = {"messages": [{"role": "user", "content": "x" * 40}, {"role": "assistant", "content": "yes"}]}
    short = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "answer"}]}
    cut = encode_row(tokenizer, short, max_seq_len=22)  # 19 tokens of prompt, then "ans"
    assert len(cut.input_ids) == 22 and _trained_text(tokenizer, cut) == ["ans"]
    kept, dropped = encode_rows(tokenizer, [short, long_prompt], max_seq_len=30)
    assert len(kept) == 1 and dropped == [2]


def test_spans_are_character_offsets_into_the_rendered_text(tokenizer):
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}
    text, spans = render_with_spans(tokenizer, row)
    assert [text[a:b] for a, b in spans] == ["Yo</s>"]


def test_a_template_that_rewrites_earlier_turns_is_refused_with_the_row(tmp_path):
    # This template numbers turns from the end, so earlier turns change when one is added.
    save_tokenizer(tmp_path, "{% for m in messages %}[{{ loop.revindex }}]{{ m['content'] }}{% endfor %}")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    rows = [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]
    with pytest.raises(JobError, match="row 1: the chat template renders earlier turns differently") as caught:
        encode_rows(tokenizer, rows, 64)
    assert caught.value.param == "training_file"


def test_a_tokenizer_without_chat_template_is_refused(tmp_path):
    save_tokenizer(tmp_path, chat_template=None)
    with pytest.raises(JobError, match="has no chat template") as caught:
        check_tokenizer(AutoTokenizer.from_pretrained(tmp_path), "base")
    assert caught.value.code == "invalid_base_model"
