"""Suite files: items JSONL with per-line errors, typed grader configs, every problem at once."""

from __future__ import annotations

import json

import pytest
import yaml

from slipway.errors import SpecError
from slipway.evals.graders import ExactMatch, JsonSchemaMatch, RegexMatch
from slipway.evals.judge import LLMJudge
from slipway.evals.suite import EvalItem, load_suite, parse_items

ITEMS = [{"input": "2+2?", "ideal": "4"}, {"messages": [{"role": "user", "content": "hi"}], "ideal": "hello"}]


def _write_suite(tmp_path, graders, items=ITEMS, fmt="yaml"):
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps(i) for i in items) + "\n")
    config = {"name": "smoke", "items": "items.jsonl", "graders": graders}
    path = tmp_path / f"suite.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(config))
    else:
        path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_load_suite_builds_items_and_graders(tmp_path, fmt):
    path = _write_suite(tmp_path, [
        {"type": "exact", "ignore_case": True},
        {"type": "regex", "pattern": r"\d", "name": "has-digit"},
        {"type": "json_schema", "schema": {"type": "object"}},
    ], fmt=fmt)
    suite = load_suite(path)
    assert suite.name == "smoke" and len(suite.items) == 2
    assert [type(g) for g in suite.graders] == [ExactMatch, RegexMatch, JsonSchemaMatch]
    assert [g.name for g in suite.graders] == ["exact", "has-digit", "json_schema"]
    assert suite.graders[0].grade(suite.items[0].model_dump(), "4").passed
    assert suite.items[0].chat() == [{"role": "user", "content": "2+2?"}]
    assert suite.items[1].chat() == ITEMS[1]["messages"]


def test_llm_judge_needs_a_complete_callable(tmp_path):
    path = _write_suite(tmp_path, [{"type": "llm_judge", "score_max": 5}])
    with pytest.raises(SpecError, match="no judge model was given"):
        load_suite(path)

    async def complete(messages):
        return "5"

    judge = load_suite(path, complete=complete).graders[0]
    assert isinstance(judge, LLMJudge) and judge.score_max == 5 and judge.pass_threshold == 0.7


def test_every_bad_item_line_is_reported_by_number():
    lines = [json.dumps(ITEMS[0]), "{broken", "", '"just a string"', json.dumps({"ideal": "x"}), json.dumps(ITEMS[1])]
    with pytest.raises(SpecError) as caught:
        parse_items(lines)
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == ["line 2", "line 4", "line 5"]
    assert "invalid JSON" in problems[0] and "JSON object" in problems[1] and '"input" or' in problems[2]


def test_empty_items_are_rejected():
    with pytest.raises(SpecError, match="no items"):
        parse_items(["", "  "])


def test_bad_graders_are_all_reported_with_their_index(tmp_path):
    path = _write_suite(tmp_path, [
        {"type": "regex", "pattern": "(("},
        {"type": "exact"},
        {"type": "json_schema", "schema": {"type": 12}},
    ])
    with pytest.raises(SpecError) as caught:
        load_suite(path)
    problems = caught.value.problems
    assert problems[0].startswith("graders.0: grader 'regex': invalid regular expression")
    assert problems[1].startswith("graders.2: grader 'json_schema': invalid JSON schema")


def test_config_errors_name_the_field(tmp_path):
    path = _write_suite(tmp_path, [{"type": "exact", "pass_threshold": 2}, {"type": "telepathy"}])
    with pytest.raises(SpecError) as caught:
        load_suite(path)
    text = "\n".join(caught.value.problems)
    assert "graders.0.exact.pass_threshold" in text and "graders.1" in text


def test_missing_items_file_says_where_it_looked(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text("name: s\nitems: nowhere.jsonl\ngraders: [{type: exact}]\n")
    with pytest.raises(SpecError, match="cannot read items file .*nowhere.jsonl"):
        load_suite(path)


def test_inline_items_work_too(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text("name: s\nitems: [{input: a, ideal: b}]\ngraders: [{type: includes}]\n")
    suite = load_suite(path)
    assert suite.items == [EvalItem(input="a", ideal="b")]
