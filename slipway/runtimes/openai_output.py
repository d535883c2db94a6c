"""Engine outputs -> OpenAI's response objects and stream chunks, as plain dicts.

    whole answer   chat_completion(...)          {"object": "chat.completion", choices, usage}
                   text_completion(...)          {"object": "text_completion", choices, usage}
    stream         ChunkWriter(route, ...)       chat.completion.chunk / text_completion dicts:
                     .opening(index)             chat: {"delta": {"role": "assistant", "content": ""}}
                     .delta(index, text, lps)    new text (and its tokens' logprobs)
                     .finish(index, reason)      empty delta, finish_reason set
                     .usage(...)                 include_usage: "choices": [] and the usage

Log-probabilities take OpenAI's two shapes: chat's `{"content": [{token, logprob, bytes,
top_logprobs}]}` and completions' `{tokens, token_logprobs, top_logprobs, text_offset}`.
Token strings come from decoding each token id alone, cached per id (bounded by the vocabulary).
"""

from __future__ import annotations

from typing import Any, Sequence

from slipway.engine import TokenLogprob
from slipway.runtimes.openai_text import Route


class TokenStrings:
    """Each token id's text decoded alone, as OpenAI's logprobs show it; cached per id."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._cache.get(token_id)
        if text is None:
            text = self._tokenizer.decode([token_id], skip_special_tokens=False)
            self._cache[token_id] = text
        return text


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def chat_logprobs(logprobs: Sequence[TokenLogprob], strings: TokenStrings) -> dict[str, Any]:
    content = []
    for item in logprobs:
        token = strings(item.token_id)
        content.append({
            "token": token, "logprob": item.logprob, "bytes": list(token.encode()),
            "top_logprobs": [{"token": (alt := strings(token_id)), "logprob": logprob, "bytes": list(alt.encode())}
                             for token_id, logprob in item.top],
        })
    return {"content": content, "refusal": None}


def completion_logprobs(logprobs: Sequence[TokenLogprob], strings: TokenStrings,
                        text_offset: int) -> tuple[dict[str, Any], int]:
    """Completions' logprobs object, and the text offset just past its last token."""
    tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
    for item in logprobs:
        token = strings(item.token_id)
        tokens.append(token)
        token_logprobs.append(item.logprob)
        top_logprobs.append({strings(token_id): logprob for token_id, logprob in item.top})
        offsets.append(text_offset)
        text_offset += len(token)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs,
            "text_offset": offsets}, text_offset


def chat_completion(response_id: str, created: int, model: str, choices: list[dict[str, Any]],
                    usage_: dict[str, Any]) -> dict[str, Any]:
    """`choices`: [{index, text, finish_reason, logprobs}] with chat-shaped logprobs or None."""
    return {
        "id": response_id, "object": "chat.completion", "created": created, "model": model,
        "system_fingerprint": None,
        "choices": [{"index": c["index"], "message": {"role": "assistant", "content": c["text"]},
                     "logprobs": c["logprobs"], "finish_reason": c["finish_reason"]} for c in choices],
        "usage": usage_,
    }


def text_completion(response_id: str, created: int, model: str, choices: list[dict[str, Any]],
                    usage_: dict[str, Any]) -> dict[str, Any]:
    """`choices`: [{index, text, finish_reason, logprobs}] with completions-shaped logprobs or None."""
    return {
        "id": response_id, "object": "text_completion", "created": created, "model": model,
        "system_fingerprint": None,
        "choices": [{"index": c["index"], "text": c["text"], "logprobs": c["logprobs"],
                     "finish_reason": c["finish_reason"]} for c in choices],
        "usage": usage_,
    }


class ChunkWriter:
    """The chunks of one streamed answer; every chunk shares the id, created time and model."""

    def __init__(self, route: Route, response_id: str, created: int, model: str, *, include_usage: bool) -> None:
        self.route = route
        self._head = {"id": response_id, "object": "chat.completion.chunk" if route == "chat" else "text_completion",
                      "created": created, "model": model, "system_fingerprint": None}
        self._include_usage = include_usage

    def _chunk(self, choice: dict[str, Any]) -> dict[str, Any]:
        chunk = {**self._head, "choices": [choice]}
        if self._include_usage:
            chunk["usage"] = None  # OpenAI: null on every chunk but the last when usage is asked for
        return chunk

    def opening(self, index: int) -> dict[str, Any]:
        """Chat: the chunk that names the speaker before any text."""
        return self._chunk({"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                            "finish_reason": None})

    def delta(self, index: int, text: str, logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.route == "chat":
            return self._chunk({"index": index, "delta": {"content": text}, "logprobs": logprobs,
                                "finish_reason": None})
        return self._chunk({"index": index, "text": text, "logprobs": logprobs, "finish_reason": None})

    def finish(self, index: int, finish_reason: str) -> dict[str, Any]:
        if self.route == "chat":
            return self._chunk({"index": index, "delta": {}, "logprobs": None, "finish_reason": finish_reason})
        return self._chunk({"index": index, "text": "", "logprobs": None, "finish_reason": finish_reason})

    def usage(self, usage_: dict[str, Any]) -> dict[str, Any]:
        return {**self._head, "choices": [], "usage": usage_}
