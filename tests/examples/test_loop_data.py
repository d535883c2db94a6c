"""examples/loop's ticket generator and grader: deterministic, disjoint splits, valid labels."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest

LOOP = Path(__file__).resolve().parents[2] / "examples" / "loop"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"loop_{name}", LOOP / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tickets = _load("tickets")
settings = _load("settings")


def test_the_same_seed_writes_the_same_tickets_and_another_seed_others() -> None:
    first = tickets.generate_tickets(200, seed=3)
    assert first == tickets.generate_tickets(200, seed=3)
    assert [t.text for t in first] != [t.text for t in tickets.generate_tickets(200, seed=4)]


def test_tickets_are_distinct_and_labelled_with_a_known_queue() -> None:
    pool = tickets.generate_tickets(500, seed=0)
    assert len({t.text for t in pool}) == 500
    assert {t.queue for t in pool} == set(tickets.QUEUES)
    assert all(t.text.strip() and "{" not in t.text and "}" not in t.text for t in pool)


def test_queues_are_balanced() -> None:
    counts = Counter(t.queue for t in tickets.generate_tickets(600, seed=1))
    assert set(counts.values()) == {100}


@pytest.mark.parametrize("heldout_templates", [0, 2])
def test_heldout_and_traffic_share_no_ticket(heldout_templates: int) -> None:
    split = tickets.split_tickets(60, 300, seed=7, heldout_templates=heldout_templates)
    assert (len(split.heldout), len(split.traffic)) == (60, 300)
    assert not {t.text for t in split.heldout} & {t.text for t in split.traffic}
    assert {t.queue for t in split.heldout} == set(tickets.QUEUES)
    assert split == tickets.split_tickets(60, 300, seed=7, heldout_templates=heldout_templates)


def test_heldout_templates_write_only_heldout_tickets() -> None:
    split = tickets.split_tickets(60, 300, seed=7, heldout_templates=2)
    heldout = {(t.queue, t.template) for t in split.heldout}
    traffic = {(t.queue, t.template) for t in split.traffic}
    assert not heldout & traffic


def test_the_default_split_is_what_the_loop_runs_on() -> None:
    defaults = settings.DEFAULT_SETTINGS
    split = tickets.split_tickets(defaults.num_heldout, defaults.num_traffic,
                                  heldout_templates=defaults.heldout_templates)
    assert not {t.text for t in split.heldout} & {t.text for t in split.traffic}


def test_asking_for_more_tickets_than_the_templates_can_write_fails_clearly() -> None:
    # The first account template has no slots: only greetings and sign-offs vary.
    limited = {queue: [0] for queue in tickets.QUEUES}
    with pytest.raises(ValueError, match="distinct tickets"):
        tickets.generate_tickets(3_000, seed=0, templates=limited)
    with pytest.raises(ValueError, match="at least 1"):
        tickets.generate_tickets(0, seed=0)
    with pytest.raises(ValueError, match="heldout_templates must be in"):
        tickets.split_tickets(60, 300, heldout_templates=10)


@pytest.mark.parametrize(("answer", "queue", "right"), [
    ("billing", "billing", True),
    ("  Billing\n", "billing", True),
    ("BILLING", "billing", True),
    ("billing.", "billing", False),
    ("The queue is billing", "billing", False),
    ("shipping", "billing", False),
    ("", "billing", False),
    (None, "billing", False),
])
def test_the_grader_is_exact_match_after_strip_and_lowercase(answer, queue, right) -> None:
    assert tickets.is_correct(answer, queue) is right


def test_eval_items_send_the_traffic_prompt_and_expect_the_queue() -> None:
    ticket = tickets.generate_tickets(1, seed=0)[0]
    item, = tickets.eval_items([ticket])
    assert item == {"messages": tickets.messages(ticket.text), "ideal": ticket.queue}
    assert item["messages"][0] == {"role": "system", "content": tickets.SYSTEM_PROMPT}
    assert all(queue in tickets.SYSTEM_PROMPT for queue in tickets.QUEUES)


def test_the_suite_grader_agrees_with_is_correct() -> None:
    from slipway.evals.suite import ExactConfig
    from slipway.evals.graders import ExactMatch

    config = ExactConfig.model_validate(tickets.EXACT_GRADER)
    grader = ExactMatch(ignore_case=config.ignore_case, collapse_whitespace=config.collapse_whitespace)
    for answer in ["billing", " Billing ", "billing.", "sales", "The queue is billing"]:
        verdict = grader.grade({"ideal": "billing"}, answer)
        assert verdict.passed is tickets.is_correct(answer, "billing"), answer
