"""The LLM judge: prompt building and reading scores out of messy answers."""

from __future__ import annotations

import pytest

from slipway.evals.graders import grade_any
from slipway.evals.judge import LLMJudge, parse_verdict


@pytest.mark.parametrize("answer, score, rationale", [
    ('{"score": 8, "rationale": "mostly right"}', 0.8, "mostly right"),
    ('Here you go:\n```json\n{"score": "7/10", "reason": "good"}\n```', 0.7, "good"),
    ('{"rating": 10, "explanation": "perfect"} hope that helps', 1.0, "perfect"),
    ("2 of the 3 facts hold. **Score:** 6", 0.6, None),
    ("Rating: 4 out of 5", 0.8, None),
    ("Score: 8/10\nRationale: mostly right", 0.8, "mostly right"),
    ("I'd say 3/4.", 0.75, None),
    ("85%", 0.85, None),
    ("9", 0.9, None),
    ("grade = 0", 0.0, None),
])
def test_parse_verdict_reads_messy_answers(answer, score, rationale):
    verdict = parse_verdict(answer, score_max=10)
    assert verdict.score == pytest.approx(score)
    if rationale is not None:
        assert verdict.rationale == rationale


@pytest.mark.parametrize("answer", ["I think 3 or 4", "no idea", '{"score": 15}', "Score: 12", '{"score": true}', ""])
def test_unreadable_or_out_of_range_answers_have_no_score(answer):
    assert parse_verdict(answer, score_max=10).score is None


async def test_judge_sends_the_item_and_sample_and_grades_with_threshold():
    seen = []

    async def complete(messages):
        seen.append(messages)
        return '{"score": 4, "rationale": "partly"}'

    judge = LLMJudge(complete, score_max=5, pass_threshold=0.7, system="be strict")
    result = await grade_any(judge, {"input": "capital of France?", "ideal": "Paris"}, "Paris, I think")
    assert result.score == pytest.approx(0.8) and result.passed and result.rationale == "partly"
    messages = seen[0]
    assert messages[0] == {"role": "system", "content": "be strict"}
    assert "capital of France?" in messages[1]["content"] and "Paris, I think" in messages[1]["content"]
    assert "from 0 (wrong) to 5" in messages[1]["content"]


async def test_an_unreadable_judge_never_passes_a_sample():
    async def complete(messages):
        return "hmm, hard to say"

    result = await LLMJudge(complete).grade({"input": "x"}, "y")
    assert result.score == 0.0 and not result.passed and "could not read a score" in result.rationale
