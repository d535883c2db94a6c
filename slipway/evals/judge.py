"""The LLM judge: ask a model to score a sample, and read a score and a rationale from its answer.

The judge does no HTTP itself: it takes `complete(messages) -> str`, an async callable the caller
binds to a model (through the gateway or a runtime). Judges answer messily, so `parse_verdict`
accepts, in this order of trust:

    {"score": 8, "rationale": "..."}            JSON, alone or inside a ``` fence or surrounding prose
    Score: 8/10   |   Rating: 4 out of 5         a labelled score, optionally over a maximum
    7/10   |   3 out of 5                       an unlabelled score over a maximum
    85%                                         a percentage
    8                                           a single number and nothing else that looks like one

A score over its own stated maximum is divided by it; a bare score is divided by the judge's
`score_max`. An answer with no readable score, or a score outside [0, max], grades 0 with a
rationale that quotes the answer: a judge that cannot be read never passes a sample.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slipway.evals.graders import GradeResult, ideals, result

Complete = Callable[[list[dict[str, str]]], Awaitable[str]]

DEFAULT_PROMPT = """You are grading an answer to a task.

Task:
{input}

Reference answer (may be empty):
{ideal}

Answer to grade:
{sample}

Grade how well the answer accomplishes the task, from 0 (wrong) to {score_max} (fully correct).
Reply with JSON only: {{"score": <number>, "rationale": "<one or two sentences>"}}"""

JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
NUMBER = r"(-?\d+(?:\.\d+)?)"
MAXIMUM = r"(?:\s*(?:/|out of)\s*" + NUMBER + ")?"
LABELLED = re.compile(r"\b(?:score|rating|grade)\b\**\s*[:=]?\s*\**\s*" + NUMBER + MAXIMUM, re.IGNORECASE)
OVER_MAX = re.compile(NUMBER + r"\s*(?:/|out of)\s*" + NUMBER, re.IGNORECASE)
PERCENT = re.compile(NUMBER + r"\s*%")
ANY_NUMBER = re.compile(NUMBER)
RATIONALE_LABEL = re.compile(r"\b(?:rationale|reason|reasoning|explanation)\b\s*[:=]\s*(.+)", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Verdict:
    """A judge's answer read back: a score in [0, 1] (None when unreadable) and its rationale."""

    score: float | None
    rationale: str


def _fraction(value: float, maximum: float) -> float | None:
    if maximum <= 0 or value < 0 or value > maximum:
        return None
    return value / maximum


def _from_json(answer: str, score_max: float) -> Verdict | None:
    match = JSON_OBJECT.search(answer)
    if not match:
        return None
    try:
        data: Any = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    raw = next((data[k] for k in ("score", "rating", "grade") if k in data), None)
    rationale = str(next((data[k] for k in ("rationale", "reason", "reasoning", "explanation") if k in data), ""))
    if raw is None:
        return None
    if isinstance(raw, str):
        inner = parse_verdict(raw, score_max=score_max)
        return Verdict(inner.score, rationale or inner.rationale)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return Verdict(None, rationale)
    return Verdict(_fraction(float(raw), score_max), rationale)


def parse_verdict(answer: str, *, score_max: float = 10.0) -> Verdict:
    """Read a score (normalised to [0, 1]) and a rationale from a judge's free-form answer."""
    text = answer.strip()
    from_json = _from_json(text, score_max)
    if from_json is not None:
        return from_json
    label = RATIONALE_LABEL.search(text)
    rationale = label.group(1).strip() if label else text
    labelled = LABELLED.search(text)
    if labelled:
        maximum = float(labelled.group(2)) if labelled.group(2) else score_max
        return Verdict(_fraction(float(labelled.group(1)), maximum), rationale)
    over = OVER_MAX.search(text)
    if over:
        return Verdict(_fraction(float(over.group(1)), float(over.group(2))), rationale)
    percent = PERCENT.search(text)
    if percent:
        return Verdict(_fraction(float(percent.group(1)), 100.0), rationale)
    numbers = ANY_NUMBER.findall(text)
    if len(numbers) == 1:
        return Verdict(_fraction(float(numbers[0]), score_max), rationale)
    return Verdict(None, rationale)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


class LLMJudge:
    """Grades by asking a model; `await judge.grade(item, sample)`."""

    def __init__(self, complete: Complete, *, name: str = "llm_judge", prompt: str = DEFAULT_PROMPT,
                 score_max: float = 10.0, pass_threshold: float = 0.7, system: str | None = None) -> None:
        self.complete, self.name, self.prompt = complete, name, prompt
        self.score_max, self.pass_threshold, self.system = score_max, pass_threshold, system

    def messages(self, item: dict[str, Any], sample: str) -> list[dict[str, str]]:
        """The judge's chat messages for one sample."""
        content = self.prompt.format(input=_as_text(item.get("input")), ideal=" | ".join(ideals(item)),
                                     sample=sample, score_max=f"{self.score_max:g}")
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + [{"role": "user", "content": content}]

    async def grade(self, item: dict[str, Any], sample: str) -> GradeResult:
        answer = await self.complete(self.messages(item, sample))
        verdict = parse_verdict(answer, score_max=self.score_max)
        if verdict.score is None:
            return result(0.0, self.pass_threshold, f"could not read a score from the judge's answer: {answer[:300]!r}")
        return result(verdict.score, self.pass_threshold, verdict.rationale[:1000])
