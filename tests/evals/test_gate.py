"""The promotion gate as a pure function: parsing SUITE:MIN[,no-regression] and deciding from two means."""

from __future__ import annotations

import pytest

from slipway.errors import SpecError
from slipway.evals.gate import GateSpec, decide, parse_gate


def test_parse_reads_suite_minimum_and_option():
    assert parse_gate("qa:0.8") == GateSpec("qa", 0.8, False)
    assert parse_gate("qa:0.8,no-regression") == GateSpec("qa", 0.8, True)
    assert parse_gate("team:qa:1") == GateSpec("team:qa", 1.0, False)  # the last colon splits


@pytest.mark.parametrize("text, words", [
    ("qa", "no minimum score"), ("qa:", "no minimum score"), (":0.5", "no minimum score"),
    ("qa:high", "is not a number"), ("qa:1.5", "between 0 and 1"), ("qa:0.5,strict", "unknown option 'strict'"),
])
def test_parse_refuses_bad_gates_saying_how_to_write_them(text, words):
    with pytest.raises(SpecError) as caught:
        parse_gate(text)
    assert words in caught.value.message and caught.value.code == "invalid_gate"


def test_candidate_below_the_minimum_is_refused_naming_both_scores():
    decision = decide(GateSpec("qa", 0.8), candidate_mean=0.75, production_mean=0.9)
    assert not decision.promote
    assert "below the minimum 0.8000" in decision.message
    assert "candidate 0.7500" in decision.message and "production 0.9000" in decision.message


def test_no_regression_refuses_a_candidate_worse_than_production_even_above_the_minimum():
    spec = GateSpec("qa", 0.5, no_regression=True)
    refused = decide(spec, candidate_mean=0.7, production_mean=0.8)
    assert not refused.promote and "below production's 0.8000" in refused.message
    assert decide(GateSpec("qa", 0.5), candidate_mean=0.7, production_mean=0.8).promote  # without the option
    assert decide(spec, candidate_mean=0.8, production_mean=0.8).promote  # equal is no regression


def test_equal_to_the_minimum_passes_despite_float_rounding():
    assert decide(GateSpec("qa", 0.3), candidate_mean=0.1 + 0.2 - 1e-15, production_mean=None).promote


def test_nothing_in_production_has_nothing_to_regress_from():
    decision = decide(GateSpec("qa", 0.5, no_regression=True), candidate_mean=0.6, production_mean=None)
    assert decision.promote and "nothing serves production" in decision.message


def test_both_failures_are_named():
    decision = decide(GateSpec("qa", 0.9, no_regression=True), candidate_mean=0.2, production_mean=0.5)
    assert "below the minimum" in decision.message and "below production's" in decision.message
