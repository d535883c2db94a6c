"""prompt_text: the leading text of each kind of request body."""

from __future__ import annotations

from slipway.routing import prompt_text


def test_chat_messages_are_flattened_in_order():
    body = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}
    assert prompt_text(body) == "system\nBe brief.\nuser\nHi\n"


def test_two_chats_with_the_same_opening_share_a_text_prefix():
    opening = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    first = prompt_text({"messages": [*opening, {"role": "assistant", "content": "Hello"}]})
    second = prompt_text({"messages": [*opening, {"role": "assistant", "content": "Hey"}]})
    common = prompt_text({"messages": opening})
    assert first.startswith(common) and second.startswith(common)


def test_content_parts_keep_only_their_text():
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "look at "}, {"type": "image_url", "image_url": {"url": "x"}},
        {"type": "text", "text": "this"}]}]}
    assert prompt_text(body) == "user\nlook at this\n"


def test_completion_embedding_and_predict_prompts():
    assert prompt_text({"prompt": "Once upon"}) == "Once upon"
    assert prompt_text({"prompt": ["first", "second"]}) == "first"
    assert prompt_text({"input": "embed me"}) == "embed me"
    assert prompt_text({"text": "predict me"}) == "predict me"


def test_no_text_is_none():
    assert prompt_text({"prompt": [1, 2, 3]}) is None       # token ids: no text
    assert prompt_text({"messages": []}) is None
    assert prompt_text({"other": "x"}) is None
    assert prompt_text(["not", "a", "mapping"]) is None  # type: ignore[arg-type]
    assert prompt_text({"messages": ["not a message"]}) is None


def test_the_text_is_cut_at_max_chars():
    long_chat = {"messages": [{"role": "user", "content": "x" * 10_000}] * 5}
    assert len(prompt_text(long_chat, max_chars=100)) == 100
    assert len(prompt_text({"prompt": "y" * 10_000}, max_chars=50)) == 50
