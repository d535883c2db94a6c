"""Graders: score one model answer (a sample) against one eval item, in [0, 1], with a reason.

Contract: `grade(item, sample) -> GradeResult`. `item` is the suite's row (it carries `ideal`, the
expected answer or a list of acceptable ones); `sample` is the model's text. A grader never raises
for a bad sample: a sample that fails to parse scores 0 and says why. It raises SpecError only when
built with a bad configuration (an invalid pattern or schema, an import path that does not resolve),
so a suite fails before it calls any model.

`passed` is `score >= pass_threshold`. The LLM judge (judge.py) grades asynchronously; use
`grade_any` to call either kind.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import jsonschema

from slipway.errors import SpecError


@dataclass(frozen=True)
class GradeResult:
    """A grader's verdict on one sample."""

    score: float
    passed: bool
    rationale: str

    def __post_init__(self) -> None:
        if not (0.0 <= self.score <= 1.0) or math.isnan(self.score):
            raise ValueError(f"score must be in [0, 1], got {self.score}")


@runtime_checkable
class Grader(Protocol):
    """Anything with a name, a pass threshold and `grade(item, sample) -> GradeResult`."""

    name: str
    pass_threshold: float

    def grade(self, item: dict[str, Any], sample: str) -> GradeResult: ...


def result(score: float, threshold: float, rationale: str) -> GradeResult:
    """A GradeResult whose `passed` follows from the threshold."""
    return GradeResult(score=score, passed=score >= threshold, rationale=rationale)


def ideals(item: dict[str, Any], field: str = "ideal") -> list[str]:
    """The acceptable answers of an item: `item[field]` as a string or list of strings."""
    value = item.get(field)
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return [v if isinstance(v, str) else json.dumps(v, sort_keys=True) for v in values]


def normalise(text: str, *, ignore_case: bool, collapse_whitespace: bool) -> str:
    if collapse_whitespace:
        text = " ".join(text.split())
    return text.casefold() if ignore_case else text


class ExactMatch:
    """1 when the sample equals one of the ideals (optionally ignoring case and whitespace runs)."""

    def __init__(self, *, name: str = "exact", ignore_case: bool = False, collapse_whitespace: bool = True,
                 ideal_field: str = "ideal", pass_threshold: float = 1.0) -> None:
        self.name, self.pass_threshold = name, pass_threshold
        self.ignore_case, self.collapse_whitespace, self.ideal_field = ignore_case, collapse_whitespace, ideal_field

    def grade(self, item: dict[str, Any], sample: str) -> GradeResult:
        options = ideals(item, self.ideal_field)
        if not options:
            return result(0.0, self.pass_threshold, f"item has no {self.ideal_field!r} to compare with")
        norm = lambda s: normalise(s, ignore_case=self.ignore_case, collapse_whitespace=self.collapse_whitespace)  # noqa: E731
        got = norm(sample)
        if any(norm(option) == got for option in options):
            return result(1.0, self.pass_threshold, "matches the ideal answer")
        return result(0.0, self.pass_threshold, f"expected {options[0]!r}, got {sample[:200]!r}")


class Includes:
    """The share of ideals found in the sample; with `require_all=False`, 1 when any one is found."""

    def __init__(self, *, name: str = "includes", ignore_case: bool = True, require_all: bool = False,
                 ideal_field: str = "ideal", pass_threshold: float = 1.0) -> None:
        self.name, self.pass_threshold = name, pass_threshold
        self.ignore_case, self.require_all, self.ideal_field = ignore_case, require_all, ideal_field

    def grade(self, item: dict[str, Any], sample: str) -> GradeResult:
        options = ideals(item, self.ideal_field)
        if not options:
            return result(0.0, self.pass_threshold, f"item has no {self.ideal_field!r} to look for")
        haystack = normalise(sample, ignore_case=self.ignore_case, collapse_whitespace=True)
        found = [o for o in options if normalise(o, ignore_case=self.ignore_case, collapse_whitespace=True) in haystack]
        missing = [o for o in options if o not in found]
        if self.require_all:
            score = len(found) / len(options)
        else:
            score = 1.0 if found else 0.0
        why = f"found {found!r}" if found else "found none of the ideals"
        if missing and self.require_all:
            why += f"; missing {missing!r}"
        return result(score, self.pass_threshold, why)


class RegexMatch:
    """1 when the pattern is found in the sample (re.search), or when it is not, with `invert`."""

    def __init__(self, pattern: str, *, name: str = "regex", ignore_case: bool = False, invert: bool = False,
                 pass_threshold: float = 1.0) -> None:
        self.name, self.pass_threshold, self.invert = name, pass_threshold, invert
        try:
            self.pattern = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        except re.error as exc:
            raise SpecError(f"grader {name!r}: invalid regular expression {pattern!r}: {exc}; "
                            "fix the pattern (remember to escape special characters like '(' or '.')") from exc

    def grade(self, item: dict[str, Any], sample: str) -> GradeResult:
        match = self.pattern.search(sample)
        hit = match is not None
        score = 1.0 if hit != self.invert else 0.0
        if hit:
            why = f"pattern {self.pattern.pattern!r} matched {match.group(0)[:100]!r}"
        else:
            why = f"pattern {self.pattern.pattern!r} not found"
        return result(score, self.pass_threshold, why + (" (inverted)" if self.invert else ""))


FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


class JsonSchemaMatch:
    """1 when the sample is JSON (optionally inside a ``` fence) that validates against the schema."""

    def __init__(self, schema: dict[str, Any], *, name: str = "json_schema", pass_threshold: float = 1.0) -> None:
        self.name, self.pass_threshold = name, pass_threshold
        try:
            validator_class = jsonschema.validators.validator_for(schema)
            validator_class.check_schema(schema)
        except jsonschema.SchemaError as exc:
            path = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            raise SpecError(f"grader {name!r}: invalid JSON schema at {path}: {exc.message}; "
                            "check it against the JSON Schema specification") from exc
        self.validator = validator_class(schema)

    def grade(self, item: dict[str, Any], sample: str) -> GradeResult:
        fenced = FENCE.match(sample)
        text = fenced.group(1) if fenced else sample
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return result(0.0, self.pass_threshold, f"sample is not JSON: {exc.msg} at column {exc.colno}")
        error = jsonschema.exceptions.best_match(self.validator.iter_errors(value))
        if error is None:
            return result(1.0, self.pass_threshold, "valid against the schema")
        path = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return result(0.0, self.pass_threshold, f"schema violation at {path}: {error.message}")


def resolve_callable(target: str | Callable[..., Any], *, name: str) -> Callable[..., Any]:
    """A callable from itself or from an import path 'package.module:function'."""
    if callable(target):
        return target
    module_name, sep, attribute = str(target).partition(":")
    if not sep or not module_name or not attribute:
        raise SpecError(f"grader {name!r}: function {target!r} must be an import path like 'my_pkg.checks:grade'")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"grader {name!r}: cannot import {target!r}: {exc}; "
                        "check the module is importable and the function name is right") from exc
    if not callable(found):
        raise SpecError(f"grader {name!r}: {target!r} is not callable")
    return found


class PythonFunction:
    """A user function `f(item, sample)` returning a GradeResult, a bool, a score, or (score, rationale)."""

    def __init__(self, function: str | Callable[..., Any], *, name: str = "python",
                 pass_threshold: float = 1.0) -> None:
        self.name, self.pass_threshold = name, pass_threshold
        self.function = resolve_callable(function, name=name)
        if inspect.iscoroutinefunction(self.function):
            raise SpecError(f"grader {name!r}: the function must be synchronous; grade over HTTP with llm_judge")

    def grade(self, item: dict[str, Any], sample: str) -> GradeResult:
        try:
            out = self.function(item, sample)
        except Exception as exc:  # a user's grader bug fails the sample, not the run
            return result(0.0, self.pass_threshold, f"grader function raised {type(exc).__name__}: {exc}")
        if isinstance(out, GradeResult):
            return out
        rationale = "returned by the grader function"
        if isinstance(out, tuple) and len(out) == 2:
            out, rationale = out[0], str(out[1])
        if isinstance(out, bool):
            return result(1.0 if out else 0.0, self.pass_threshold, rationale)
        if isinstance(out, (int, float)) and 0.0 <= out <= 1.0:
            return result(float(out), self.pass_threshold, rationale)
        return result(0.0, self.pass_threshold,
                      f"grader function returned {out!r}; return a bool, a score in [0, 1] or (score, rationale)")


async def grade_any(grader: Any, item: dict[str, Any], sample: str) -> GradeResult:
    """Call a grader whether its `grade` is synchronous or a coroutine (the LLM judge)."""
    out = grader.grade(item, sample)
    if inspect.isawaitable(out):
        out = await out
    return out
