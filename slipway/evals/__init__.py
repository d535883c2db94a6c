"""Evals: suites of items, graders that score answers, summaries and the no-regression gate.

    graders   the Grader contract and the deterministic graders (exact, includes, regex, json_schema, python)
    judge     the LLM judge over an async `complete(messages)` callable, and its answer parser
    suite     suite files: items JSONL + typed grader configs, every problem reported at once
    summary   mean score, pass rate, 95% intervals, comparison of two runs
    gate      the promotion gate: SUITE:MIN[,no-regression] and its decision from two mean scores
    catalog   suites as the store keeps them (items file + row), loaded for runs
    runner    eval runs through the gateway (official openai client) and the worker that executes them
"""

from slipway.evals.graders import (
    ExactMatch, GradeResult, Grader, Includes, JsonSchemaMatch, PythonFunction, RegexMatch, grade_any,
)
from slipway.evals.gate import GateDecision, GateSpec, decide, parse_gate
from slipway.evals.judge import LLMJudge, Verdict, parse_verdict
from slipway.evals.suite import EvalItem, GraderConfig, Suite, SuiteConfig, build_grader, load_suite, parse_items
from slipway.evals.summary import Comparison, RunSummary, compare, mean_interval, summarise, wilson_interval

__all__ = [
    "ExactMatch", "GradeResult", "Grader", "Includes", "JsonSchemaMatch", "PythonFunction", "RegexMatch",
    "grade_any", "LLMJudge", "Verdict", "parse_verdict",
    "EvalItem", "GraderConfig", "Suite", "SuiteConfig", "build_grader", "load_suite", "parse_items",
    "GateDecision", "GateSpec", "decide", "parse_gate",
    "Comparison", "RunSummary", "compare", "mean_interval", "summarise", "wilson_interval",
]
