"""Chat fine-tuning JSONL validation: every problem by line, warnings vs errors, stats."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slipway.errors import SpecError
from slipway.train.dataset_format import DatasetError, Problem, load_rows, validate_file, validate_text

GOOD = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                     {"role": "assistant", "content": "hello"}]}


def _lines(*rows: object) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows)


def test_a_good_file_has_no_problems_and_counts_rows_and_messages():
    report = validate_text(_lines(GOOD, "", GOOD))
    assert report.ok and report.problems == []
    assert report.stats.num_rows == 2
    assert report.stats.num_messages == 6
    # "be brief" 2 + "hi" 1 + "hello" 2 tokens, plus 4 framing tokens per message, twice.
    assert report.stats.num_tokens_estimate == 2 * (5 + 3 * 4)


def test_every_malformed_line_is_reported_with_its_number():
    text = _lines(
        GOOD,                                                                  # 1 ok
        "{not json",                                                           # 2
        "[1, 2]",                                                              # 3
        {"prompt": "x"},                                                       # 4
        {"messages": []},                                                      # 5
        {"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]},  # 6
        {"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]},      # 7
        {"messages": [{"role": "user", "content": "only a question"}]},       # 8
        "",                                                                    # 9 blank: fine
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 2}]},  # 10
        {"messages": [{"role": "user", "content": "q", "weight": 1}, {"role": "assistant", "content": "a"}]},  # 11
    )
    report = validate_text(text)
    by_line = {p.line: p.reason for p in report.errors}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7, 8, 10, 11]
    assert "invalid JSON" in by_line[2]
    assert "JSON object" in by_line[3]
    assert "missing" in by_line[4]
    assert "non-empty" in by_line[5]
    assert "wizard" in by_line[6]
    assert "content must be a string" in by_line[7]
    assert "no assistant message" in by_line[8]
    assert "weight must be 0 or 1" in by_line[10]
    assert "only assistant messages" in by_line[11]
    assert report.stats.num_rows == 1


def test_a_trailing_user_turn_and_all_zero_weights_are_warnings_not_errors():
    trailing = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                             {"role": "user", "content": "thanks"}]}
    muted = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]}
    report = validate_text(_lines(trailing, muted))
    assert report.ok
    assert [(p.line, p.severity) for p in report.warnings] == [(1, "warning"), (2, "warning")]
    assert report.stats.num_rows == 2


def test_content_may_be_a_list_of_text_parts_but_not_images():
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]},
                          {"role": "assistant", "content": "a"}]}
    image = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                          {"role": "assistant", "content": "a"}]}
    report = validate_text(_lines(parts, image))
    assert [p.line for p in report.errors] == [2]


def test_dataset_error_caps_listed_problems_and_counts_the_rest(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(["nope"] * 130))
    with pytest.raises(DatasetError) as caught:
        load_rows(path)
    error = caught.value
    assert isinstance(error, SpecError) and error.status_code == 400
    assert len(error.problems) == 101
    assert error.problems[0].startswith("line 1: invalid JSON")
    assert error.problems[-1] == "... and 30 more problems"
    assert len(error.line_problems) == 130


def test_load_rows_returns_rows_of_a_valid_file(tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text(_lines(GOOD, "", GOOD) + "\n")
    assert load_rows(path) == [GOOD, GOOD]
    assert validate_file(path).stats.num_rows == 2


def test_problem_prints_its_line():
    assert str(Problem(3, "bad")) == "line 3: bad"
    assert str(Problem(4, "odd", "warning")) == "line 4: odd (warning)"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.just("good"), st.just("bad"), st.just("blank")), max_size=30))
def test_bad_lines_are_exactly_the_ones_reported(kinds):
    lines = [json.dumps(GOOD) if k == "good" else "{oops" if k == "bad" else "   " for k in kinds]
    report = validate_text("\n".join(lines))
    assert [p.line for p in report.errors] == [i + 1 for i, k in enumerate(kinds) if k == "bad"]
    assert report.stats.num_rows == kinds.count("good")
