"""Deterministic graders: scores, thresholds, and configuration errors that name the problem."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slipway.errors import SpecError
from slipway.evals.graders import (
    ExactMatch, GradeResult, Grader, Includes, JsonSchemaMatch, PythonFunction, RegexMatch, grade_any,
)


def test_exact_match_normalises_whitespace_and_optionally_case():
    item = {"ideal": ["Paris", "paris, france"]}
    assert ExactMatch().grade(item, "  Paris \n").score == 1.0
    assert ExactMatch().grade(item, "PARIS").score == 0.0
    assert ExactMatch(ignore_case=True).grade(item, "PARIS").passed
    assert ExactMatch(collapse_whitespace=False).grade(item, "Paris ").score == 0.0
    missing = ExactMatch().grade({}, "Paris")
    assert missing.score == 0.0 and "no 'ideal'" in missing.rationale


@given(st.text(max_size=30))
def test_exact_match_accepts_its_own_ideal(text):
    assert ExactMatch().grade({"ideal": text}, text).passed


def test_includes_any_or_share_of_all():
    item = {"ideal": ["refund", "5 days"]}
    assert Includes().grade(item, "We will send a REFUND.").score == 1.0
    partial = Includes(require_all=True, pass_threshold=1.0).grade(item, "a refund is coming")
    assert partial.score == 0.5 and not partial.passed and "missing ['5 days']" in partial.rationale
    assert Includes(require_all=True, pass_threshold=0.5).grade(item, "a refund is coming").passed
    assert Includes().grade(item, "nothing").score == 0.0


def test_regex_searches_and_can_invert():
    grader = RegexMatch(r"order #\d+")
    assert grader.grade({}, "Your order #123 shipped").score == 1.0
    assert grader.grade({}, "no order here").score == 0.0
    banned = RegexMatch(r"as an ai", ignore_case=True, invert=True)
    assert banned.grade({}, "As an AI I cannot").score == 0.0
    assert banned.grade({}, "Sure, here it is").passed


def test_bad_regex_names_grader_and_pattern():
    with pytest.raises(SpecError) as caught:
        RegexMatch(r"order (\d+", name="ids")
    assert caught.value.message.startswith("grader 'ids': invalid regular expression 'order (")
    assert "missing ), unterminated subpattern" in caught.value.message


SCHEMA = {"type": "object", "required": ["intent"], "properties": {"intent": {"enum": ["refund", "other"]}}}


def test_json_schema_validates_plain_and_fenced_json():
    grader = JsonSchemaMatch(SCHEMA)
    assert grader.grade({}, '{"intent": "refund"}').passed
    assert grader.grade({}, '```json\n{"intent": "other"}\n```').passed
    wrong = grader.grade({}, '{"intent": "cake"}')
    assert wrong.score == 0.0 and "schema violation at intent" in wrong.rationale
    assert "required" in grader.grade({}, "{}").rationale
    assert "not JSON" in grader.grade({}, "intent: refund").rationale


def test_bad_schema_is_a_spec_error_with_its_location():
    with pytest.raises(SpecError, match=r"invalid JSON schema at properties/x/type"):
        JsonSchemaMatch({"type": "object", "properties": {"x": {"type": "banana"}}})


def polite(item, sample):
    return ("please" in sample.lower(), "looked for please")


def test_python_function_by_callable_and_import_path():
    assert PythonFunction(polite).grade({}, "Please wait").passed
    by_path = PythonFunction("tests.evals.test_graders:polite")
    result = by_path.grade({}, "wait")
    assert result.score == 0.0 and result.rationale == "looked for please"
    assert PythonFunction(lambda i, s: 0.25, pass_threshold=0.2).grade({}, "x") == GradeResult(0.25, True, "returned by the grader function")


def test_python_function_failures_fail_the_sample_not_the_run():
    assert "ZeroDivisionError" in PythonFunction(lambda i, s: 1 / 0).grade({}, "x").rationale
    assert "return a bool" in PythonFunction(lambda i, s: 7).grade({}, "x").rationale


@pytest.mark.parametrize("target, message", [
    ("no_colon", "must be an import path"),
    ("not_a_module_xyz:f", "cannot import"),
    ("tests.evals.test_graders:missing", "cannot import"),
    ("tests.evals.test_graders:SCHEMA", "not callable"),
])
def test_python_function_bad_targets(target, message):
    with pytest.raises(SpecError, match=message):
        PythonFunction(target)


def test_grade_result_rejects_scores_outside_unit_interval():
    with pytest.raises(ValueError):
        GradeResult(1.5, True, "")


async def test_grade_any_calls_sync_graders_and_they_meet_the_protocol():
    for grader in (ExactMatch(), Includes(), RegexMatch("x"), JsonSchemaMatch({}), PythonFunction(polite)):
        assert isinstance(grader, Grader)
    assert (await grade_any(ExactMatch(), {"ideal": "a"}, "a")).passed
