"""Chat rows to token ids and labels, with the loss on assistant tokens only.

A row is rendered with the tokenizer's own chat template, so training sees exactly the text the
model sees when it is served. Which characters belong to a trained assistant message is found
by rendering the conversation incrementally:

    prefix = template(messages[:i], add_generation_prompt=True)   ... "<|im_start|>assistant\\n"
    turn   = template(messages[:i + 1])                            ... "<|im_start|>assistant\\nHi!<|im_end|>\\n"
    span   = turn[len(prefix):]                                    "Hi!<|im_end|>\\n"

so the span holds the message and the template's end-of-turn marker (the model learns to stop),
but not the role header. The whole conversation is tokenized once; a token is trained when its
first character lies in a span. Every other token's label is -100, which the loss ignores.

Assistant messages with `"weight": 0` are not trained; turns after the last trained assistant
message are not rendered at all. Templates whose earlier turns change when later turns are added
cannot be split this way; they are refused with a message saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slipway.train.dataset_format import message_text
from slipway.train.job import JobError

IGNORE_INDEX = -100
# Message fields passed on to the chat template; "weight" is ours and stays out.
_TEMPLATE_FIELDS = ("role", "content", "name", "tool_calls", "tool_call_id")


@dataclass(frozen=True)
class EncodedRow:
    """One training row: token ids and, per token, its label (the id itself, or -100 when not trained)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def num_trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def check_tokenizer(tokenizer: Any, where: str) -> None:
    """Raise JobError unless the tokenizer can render chats and report character offsets."""
    if not getattr(tokenizer, "chat_template", None):
        raise JobError(f"the tokenizer of {where} has no chat template; use an instruct model, or add a "
                       "chat_template (chat_template.jinja or tokenizer_config.json) to the folder",
                       code="invalid_base_model", param="model")
    if not getattr(tokenizer, "is_fast", False):
        raise JobError(f"the tokenizer of {where} is not a fast tokenizer, which training needs to find "
                       "assistant tokens; add a tokenizer.json to the folder", code="invalid_base_model",
                       param="model")


def _template_message(message: dict[str, Any]) -> dict[str, Any]:
    out = {k: message[k] for k in _TEMPLATE_FIELDS if k in message}
    text = message_text(message.get("content"))
    if text is not None:
        out["content"] = text
    return out


def _trained(message: dict[str, Any]) -> bool:
    return message.get("role") == "assistant" and message.get("weight", 1) == 1


def render_with_spans(tokenizer: Any, row: dict[str, Any]) -> tuple[str, list[tuple[int, int]]]:
    """The conversation as text, up to its last trained assistant message, and each such message's span.

    Spans are [start, end) character offsets into the text. Raises ValueError when the template
    cannot be split into turns.
    """
    messages = [_template_message(m) for m in row["messages"]]
    tools = row.get("tools")
    trained = [i for i, m in enumerate(row["messages"]) if _trained(m)]
    if not trained:
        return "", []

    def render(upto: int, generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(messages[:upto], tools=tools, tokenize=False,
                                             add_generation_prompt=generation_prompt)

    text = render(trained[-1] + 1, False)
    spans = []
    for i in trained:
        if i == 0:
            raise ValueError("the conversation starts with an assistant message; put a system or user message "
                             "before it")
        prefix, turn = render(i, True), render(i + 1, False)
        if not turn.startswith(prefix) or not text.startswith(turn):
            raise ValueError("the chat template renders earlier turns differently once later turns are added, "
                             f"so the assistant message at messages[{i}] cannot be located; use a model whose "
                             "template renders each turn the same way whatever follows it")
        spans.append((len(prefix), len(turn)))
    return text, spans


def encode_row(tokenizer: Any, row: dict[str, Any], max_seq_len: int) -> EncodedRow:
    """Token ids and labels of one chat row, cut to `max_seq_len` tokens."""
    text, spans = render_with_spans(tokenizer, row)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])[:max_seq_len]
    offsets = list(encoding["offset_mapping"])[:max_seq_len]
    labels = [IGNORE_INDEX] * len(input_ids)
    for index, (start, end) in enumerate(offsets):
        if end > start and any(span_start <= start < span_end for span_start, span_end in spans):
            labels[index] = input_ids[index]
    return EncodedRow(input_ids=input_ids, labels=labels)


def encode_rows(tokenizer: Any, rows: list[dict[str, Any]], max_seq_len: int, *,
                param: str = "training_file") -> tuple[list[EncodedRow], list[int]]:
    """Encode every row; returns the rows with at least one trained token and the 1-based numbers of
    the rows left out because nothing trainable fit in `max_seq_len`.

    Raises JobError listing every row the template cannot render.
    """
    encoded: list[EncodedRow] = []
    empty: list[int] = []
    problems: list[str] = []
    for number, row in enumerate(rows, start=1):
        try:
            result = encode_row(tokenizer, row, max_seq_len)
        except ValueError as exc:
            problems.append(f"row {number}: {exc}")
            continue
        except Exception as exc:  # a template's own error (jinja2, a raise_exception call)
            problems.append(f"row {number}: the chat template failed: {type(exc).__name__}: {exc}")
            continue
        if result.num_trained_tokens == 0:
            empty.append(number)
        else:
            encoded.append(result)
    if problems:
        listed = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise JobError(f"{param}: {len(problems)} row(s) cannot be rendered with the model's chat template: {listed}",
                       code=f"invalid_{param}", param=param)
    return encoded, empty
