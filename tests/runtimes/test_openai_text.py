"""Prompts to token ids on the replica: the shared rendering of spec.openai, with 400s naming the parameter."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from slipway.runtimes.base import BadRequestError
from slipway.runtimes.openai_text import (
    chat_prompt_ids, completion_prompt_ids, parse_chat_request, parse_completion_request,
)
from slipway.spec.openai import ChatMessage, chat_template_messages, completion_prompts
from tests.engine.conftest import VOCAB_SIZE, _save_tokenizer

TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
STRICT_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'assistant' and loop.first %}"
                   "{{ raise_exception('a conversation starts with the user') }}{% endif %}"
                   "{{ m['content'] }}{% endfor %}")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("openai-text-tokenizer")
    _save_tokenizer(folder)
    loaded = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    loaded.chat_template = TEMPLATE
    return loaded


def test_chat_messages_reach_the_template_as_it_expects():
    messages = [ChatMessage(role="developer", content="be brief", name="ops"),
                ChatMessage(role="assistant", content=None), ChatMessage(role="user", content=[
                    {"type": "text", "text": "a"}, {"type": "text", "text": "b"}])]
    assert chat_template_messages(messages) == [
        {"role": "system", "content": "be brief", "name": "ops"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "a\nb"},
    ]


def test_chat_prompt_ids_are_the_rendered_template_without_extra_special_tokens(tokenizer):
    request = parse_chat_request({"messages": [{"role": "user", "content": "hi"}]})
    assert chat_prompt_ids(tokenizer, request) == tokenizer("<user>hi", add_special_tokens=False)["input_ids"]


def test_a_model_without_a_chat_template_answers_400_on_messages(tokenizer):
    template, tokenizer.chat_template = tokenizer.chat_template, None
    try:
        with pytest.raises(BadRequestError, match="no chat template") as caught:
            chat_prompt_ids(tokenizer, parse_chat_request({"messages": [{"role": "user", "content": "hi"}]}))
    finally:
        tokenizer.chat_template = template
    assert caught.value.param == "messages" and caught.value.status_code == 400


def test_a_template_that_refuses_the_messages_answers_400_with_its_reason(tokenizer):
    request = parse_chat_request({"messages": [{"role": "assistant", "content": "hi"}]})
    template, tokenizer.chat_template = tokenizer.chat_template, STRICT_TEMPLATE
    try:
        with pytest.raises(BadRequestError, match="starts with the user") as caught:
            chat_prompt_ids(tokenizer, request)
    finally:
        tokenizer.chat_template = template
    assert caught.value.param == "messages"


@pytest.mark.parametrize(("prompt", "expected"), [
    ("abc", ["abc"]), ([1, 2], [[1, 2]]), (["a", "b"], ["a", "b"]), ([[1], [2, 3]], [[1], [2, 3]]), ([], []),
])
def test_completion_prompts_come_in_four_shapes(prompt, expected):
    assert completion_prompts(prompt) == expected


def test_completion_prompt_ids_tokenize_texts_with_special_tokens_and_keep_ids(tokenizer):
    request = parse_completion_request({"prompt": ["ab", "c"]})
    assert completion_prompt_ids(tokenizer, request, VOCAB_SIZE) == [tokenizer("ab")["input_ids"],
                                                                      tokenizer("c")["input_ids"]]
    request = parse_completion_request({"prompt": [7, 8, 9]})
    assert completion_prompt_ids(tokenizer, request, VOCAB_SIZE) == [[7, 8, 9]]


@pytest.mark.parametrize(("prompt", "message"), [
    ([], "empty list"), ([VOCAB_SIZE], "outside"), ([[1], []], r"prompt\[1\] is empty"),
])
def test_bad_completion_prompts_answer_400_on_prompt(tokenizer, prompt, message):
    with pytest.raises(BadRequestError, match=message) as caught:
        completion_prompt_ids(tokenizer, parse_completion_request({"prompt": prompt}), VOCAB_SIZE)
    assert caught.value.param == "prompt"
