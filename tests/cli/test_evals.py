"""The evals CLI's input errors: one clear line, no traceback, exit 1, before anything reaches the server.

Suites, runs and the gate against a live `slipway up` are exercised in tests/e2e/test_gate.py.
"""

from __future__ import annotations

import pytest

from slipway.cli.main import _grader_option
from slipway.errors import SlipwayError
from tests.cli.test_main import run

OFFLINE = {"SLIPWAY_API_KEY": "sk-slw-x", "SLIPWAY_URL": "http://127.0.0.1:9"}


@pytest.mark.parametrize(("args", "words"), [
    (("promote", "qa", "--deployment", "2", "--gate", "arith"), "has no minimum score"),
    (("promote", "qa", "--deployment", "2", "--gate", "arith:2"), "must be between 0 and 1"),
    (("promote", "qa", "--deployment", "2", "--gate", "arith:0.5,strict"), "unknown option 'strict'"),
    (("evals", "suites", "create", "/nonexistent.jsonl", "--name", "x", "--grader", "exact"), "is not a file"),
    (("evals", "ls"), "cannot reach slipway"),
])
def test_errors_are_one_clear_line(tmp_path, args, words):
    result = run(*args, env_home=tmp_path, **OFFLINE)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("error:")
    assert words in " ".join(result.stderr.split())


def test_a_grader_is_a_type_name_or_a_json_object():
    assert _grader_option("exact") == {"type": "exact"}
    assert _grader_option('{"type": "regex", "pattern": "\\\\d+"}') == {"type": "regex", "pattern": "\\d+"}
    with pytest.raises(SlipwayError, match="is not valid JSON"):
        _grader_option("{type: regex}")
    with pytest.raises(SlipwayError, match="must be a JSON object"):
        _grader_option("[1]")
