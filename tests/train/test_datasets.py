"""Dataset files: canonical hash, deterministic split, atomic writes, rows from traces."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slipway.errors import SpecError
from slipway.train.dataset_format import validate_file
from slipway.train.datasets import content_hash, rows_from_traces, split_rows, write_split


def _row(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]}


ROWS = [_row(i) for i in range(200)]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=5), json_values, max_size=4), max_size=5))
def test_content_hash_is_stable_under_reserialisation(rows):
    reserialised = [json.loads(json.dumps(dict(reversed(list(r.items()))), indent=2, ensure_ascii=True)) for r in rows]
    assert content_hash(reserialised) == content_hash(rows)


def test_content_hash_changes_with_content_and_order():
    assert content_hash(ROWS[:2]) != content_hash([ROWS[0], _row(99_999)])
    assert content_hash(ROWS[:2]) != content_hash([ROWS[1], ROWS[0]])
    assert len(content_hash([])) == 64


def test_split_is_deterministic_disjoint_complete_and_near_the_fraction():
    first = split_rows(ROWS, 0.2, seed=7)
    again = split_rows(ROWS, 0.2, seed=7)
    assert first == again
    train_keys = {json.dumps(r) for r in first.train}
    validation_keys = {json.dumps(r) for r in first.validation}
    assert not train_keys & validation_keys
    assert len(first.train) + len(first.validation) == len(ROWS)
    assert 20 <= len(first.validation) <= 60
    assert split_rows(ROWS, 0.2, seed=8) != first


def test_split_survives_reordering_and_growth():
    shuffled = ROWS[:]
    random.Random(1).shuffle(shuffled)
    key = lambda rows: sorted(json.dumps(r) for r in rows)  # noqa: E731
    assert key(split_rows(shuffled, 0.2, seed=3).validation) == key(split_rows(ROWS, 0.2, seed=3).validation)
    grown = split_rows(ROWS + [_row(i) for i in range(200, 260)], 0.2, seed=3)
    assert set(key(split_rows(ROWS, 0.2, seed=3).validation)) <= set(key(grown.validation))


def test_duplicates_land_on_the_same_side():
    split = split_rows([ROWS[0]] * 5 + ROWS[1:50], 0.3, seed=0)
    copies = (split.train.count(ROWS[0]), split.validation.count(ROWS[0]))
    assert copies in ((5, 0), (0, 5))


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=2, max_value=12), st.floats(min_value=0.01, max_value=0.99), st.integers(0, 1000))
def test_small_datasets_get_both_sides(n, fraction, seed):
    split = split_rows(ROWS[:n], fraction, seed=seed)
    assert split.train and split.validation
    assert len(split.train) + len(split.validation) == n


def test_zero_fraction_keeps_everything_for_training_and_bad_fractions_are_rejected():
    assert split_rows(ROWS[:10], 0.0).validation == []
    with pytest.raises(SpecError, match="validation_fraction"):
        split_rows(ROWS, 1.0)


def test_write_split_writes_valid_files_and_a_manifest(tmp_path):
    folder = tmp_path / "datasets" / "ds-1"
    split = split_rows(ROWS[:50], 0.2, seed=1)
    files = write_split(folder, split, validation_fraction=0.2, seed=1)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "train.jsonl", "validation.jsonl"]
    assert validate_file(files.train_path).stats.num_rows == len(split.train) == files.num_train
    assert validate_file(files.validation_path).stats.num_rows == len(split.validation)
    manifest = json.loads(files.manifest_path.read_text())
    assert manifest["train"]["sha256"] == content_hash(split.train)
    assert manifest["validation"]["rows"] == len(split.validation)
    assert manifest["seed"] == 1
    # Rewriting replaces the files whole and leaves no temporary files behind.
    write_split(folder, split_rows(ROWS[:10], 0.2, seed=1))
    assert json.loads(files.manifest_path.read_text())["train"]["rows"] + \
        json.loads(files.manifest_path.read_text())["validation"]["rows"] == 10
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def _trace(question: str, **fields) -> dict:
    return {"request": {"model": "m", "messages": [{"role": "user", "content": question}]}, **fields}


def test_rows_from_traces_prefers_corrections_and_filters_by_feedback():
    traces = [
        _trace("a", output="model a", feedback_score=0.9),
        _trace("b", output="model b", feedback_score=0.1),
        _trace("c", output="model c", feedback_score=0.1, corrected_output="fixed c"),
        _trace("d", response={"choices": [{"message": {"role": "assistant", "content": "model d"}}]}),
        _trace("e"),                                   # no answer: skipped
        {"request": {}, "output": "no messages"},      # no messages: skipped
        _trace("f", output="model f", corrected_output="   "),
    ]
    rows = rows_from_traces(traces, min_feedback_score=0.5)
    answers = [(r["messages"][0]["content"], r["messages"][-1]["content"]) for r in rows]
    assert answers == [("a", "model a"), ("c", "fixed c"), ("d", "model d"), ("f", "model f")]
    assert all(r["messages"][-1]["role"] == "assistant" for r in rows)
    strict = rows_from_traces(traces, min_feedback_score=0.5, require_feedback=True)
    assert [r["messages"][0]["content"] for r in strict] == ["a", "c"]


def test_rows_from_traces_keeps_tools_and_validates(tmp_path):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    trace = _trace("q", output="a")
    trace["request"]["tools"] = tools
    rows = rows_from_traces([trace])
    assert rows[0]["tools"] == tools
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert validate_file(path).ok
