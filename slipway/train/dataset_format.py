"""The chat fine-tuning JSONL format: validate every line, report every problem, count the rows.

One training example per line, OpenAI's chat fine-tuning shape:

    {"messages": [{"role": "system", "content": "..."},
                  {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "...", "weight": 1}],
     "tools": [...]}                                                    # optional

Blank lines are skipped. Every problem is collected, never only the first, so a user fixes a file
in one pass. Two severities:

- error: the row cannot be trained on (bad JSON, no messages, unknown role, non-text content, a
  weight other than 0 or 1 or on a non-assistant message, no assistant message at all).
- warning: the row trains, but something is likely a mistake. A conversation that does not end
  with an assistant message is a warning, not an error: the turns after the last assistant message
  carry no training signal, yet they are harmless and some exports include a trailing user turn.
  Likewise a row whose every assistant message has weight 0 trains nothing.

Token counts are an estimate (about four characters per token plus a few tokens of chat framing per
message), good for sizing a job and its cost, not for billing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from slipway.errors import SpecError

ROLES = ("system", "user", "assistant", "tool")
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
MAX_LISTED_PROBLEMS = 100


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one line; `line` counts from 1 like an editor does."""

    line: int
    reason: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}" + (" (warning)" if self.severity == "warning" else "")


@dataclass
class DatasetStats:
    """What a valid file holds; rows with errors are not counted."""

    num_rows: int = 0
    num_messages: int = 0
    num_tokens_estimate: int = 0


@dataclass
class DatasetReport:
    """The outcome of validating a file: its problems in line order, and its stats."""

    problems: list[Problem] = field(default_factory=list)
    stats: DatasetStats = field(default_factory=DatasetStats)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors


class DatasetError(SpecError):
    """A dataset file has lines that cannot be trained on; `problems` names each line and reason."""

    code = "invalid_dataset"

    def __init__(self, source: str, problems: list[Problem], *, max_listed: int = MAX_LISTED_PROBLEMS) -> None:
        self.line_problems = list(problems)
        listed = [str(p) for p in problems[:max_listed]]
        if len(problems) > max_listed:
            listed.append(f"... and {len(problems) - max_listed} more problems")
        super().__init__(
            f"{source} has {len(problems)} problem(s); fix each line listed below and upload it again",
            listed,
        )


def estimate_tokens(text: str) -> int:
    """About four characters per token; zero for empty text."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def message_text(content: Any) -> str | None:
    """The text of a message's content, or None when it is neither a string nor a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        for part in content
    ):
        return "".join(part["text"] for part in content)
    return None


def check_row(row: Any) -> tuple[list[tuple[str, str]], int]:
    """The (severity, reason) problems of one parsed row, and its estimated tokens."""
    if not isinstance(row, dict):
        return [("error", f"expected a JSON object, got {type(row).__name__}")], 0
    messages = row.get("messages")
    if messages is None:
        return [("error", 'missing "messages": each line needs {"messages": [...]}')], 0
    if not isinstance(messages, list) or not messages:
        return [("error", '"messages" must be a non-empty list of {"role", "content"} objects')], 0
    if "tools" in row and not isinstance(row["tools"], list):
        problems = [("error", '"tools" must be a list of tool definitions')]
    else:
        problems = []

    tokens = 0
    trained_weights: list[int] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            problems.append(("error", f"{where} must be an object, got {type(message).__name__}"))
            continue
        role = message.get("role")
        if role not in ROLES:
            problems.append(("error", f"{where} has unknown role {role!r}; use one of {', '.join(ROLES)}"))
        content = message.get("content")
        text = message_text(content)
        if text is None and not (role == "assistant" and content is None and message.get("tool_calls")):
            problems.append(("error", f"{where}.content must be a string or a list of text parts, "
                                      f"got {type(content).__name__}"))
        tokens += TOKENS_PER_MESSAGE + estimate_tokens(text or "")
        if "weight" in message:
            weight = message["weight"]
            if role != "assistant":
                problems.append(("error", f"{where} has a weight but only assistant messages may"))
            elif weight not in (0, 1) or isinstance(weight, bool):
                problems.append(("error", f"{where}.weight must be 0 or 1, got {weight!r}"))
            else:
                trained_weights.append(weight)
        elif role == "assistant":
            trained_weights.append(1)

    has_assistant = any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages)
    if not has_assistant:
        problems.append(("error", "no assistant message: there is nothing to learn from this row"))
    else:
        last = messages[-1]
        if isinstance(last, dict) and last.get("role") != "assistant":
            problems.append(("warning", "last message is not from the assistant; turns after the last "
                                        "assistant message are ignored in training"))
        if trained_weights and not any(trained_weights):
            problems.append(("warning", "every assistant message has weight 0; this row trains nothing"))
    return problems, tokens


def validate_lines(lines: Iterable[str]) -> DatasetReport:
    """Validate JSONL lines (blank lines allowed) and return every problem with its line number."""
    report = DatasetReport()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            report.problems.append(Problem(number, f"invalid JSON: {exc.msg} at column {exc.colno}"))
            continue
        problems, tokens = check_row(row)
        report.problems += [Problem(number, reason, severity) for severity, reason in problems]  # type: ignore[arg-type]
        if not any(severity == "error" for severity, _ in problems):
            report.stats.num_rows += 1
            report.stats.num_messages += len(row["messages"])
            report.stats.num_tokens_estimate += tokens
    return report


def validate_text(text: str) -> DatasetReport:
    """Validate a whole JSONL document held in memory."""
    return validate_lines(text.splitlines())


def validate_file(path: str | Path) -> DatasetReport:
    """Validate a JSONL file, reading it line by line."""
    with open(path, encoding="utf-8") as handle:
        return validate_lines(handle)


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a valid JSONL file; raises DatasetError listing every error by line."""
    report = validate_file(path)
    if not report.ok:
        raise DatasetError(str(path), report.errors)
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
