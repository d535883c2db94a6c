"""The prompt of a request body as one string, for prefix-aware routing.

    text = prompt_text(orjson.loads(body), max_chars=4096)
    RouteRequest(deployment_id, prompt_text=text)

Chat messages are flattened as "role\\ncontent\\n" each, in order, so two conversations that share
a system prompt and their first turns share a prefix, as their token sequences do on the replica.
At most `max_chars` characters are returned, whatever the size of the body.
"""

from __future__ import annotations

from typing import Any, Mapping

DEFAULT_MAX_CHARS = 4096


def prompt_text(payload: Mapping[str, Any], max_chars: int = DEFAULT_MAX_CHARS) -> str | None:
    """The leading text of a chat, completion, embedding or predict payload; None when it has none."""
    if not isinstance(payload, Mapping):
        return None
    parts: list[str] = []
    budget = max_chars
    messages = payload.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if budget <= 0 or not isinstance(message, Mapping):
                break
            piece = f"{message.get('role', '')}\n{_content_text(message.get('content'))}\n"
            parts.append(piece[:budget])
            budget -= len(piece)
    else:
        for field in ("prompt", "input", "text"):
            piece = _first_text(payload.get(field))
            if piece is not None:
                parts.append(piece[:max_chars])
                break
    text = "".join(parts)
    return text or None


def _content_text(content: Any) -> str:
    """A message's content: a string, or the text of its text parts (other parts are skipped)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content
                       if isinstance(part, Mapping) and isinstance(part.get("text"), str))
    return ""


def _first_text(value: Any) -> str | None:
    """A prompt given as a string, or the first string of a batch; token-id prompts have no text."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[0], str):
        return value[0]
    return None
