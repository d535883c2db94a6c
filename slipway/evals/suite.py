"""An eval suite: items (JSONL) and the graders that score answers to them, loaded from one file.

    # suite.yaml (or .json)
    name: support-answers
    items: items.jsonl              # relative to this file
    graders:
      - {type: exact, ignore_case: true}
      - {type: regex, pattern: "order #\\d+"}
      - {type: json_schema, schema: {type: object, required: [intent]}}
      - {type: python, function: "my_checks:polite"}
      - {type: llm_judge, score_max: 10, pass_threshold: 0.7}

Each item line is {"input": ..., "ideal": ..., "messages": [...]}: `messages` (an OpenAI chat) is
what the model is sent; without it the model gets `input` as a single user message. Every bad line
and every bad grader is reported at once, by line number or grader index.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slipway.errors import SpecError
from slipway.evals.graders import ExactMatch, Grader, Includes, JsonSchemaMatch, PythonFunction, RegexMatch
from slipway.evals.judge import DEFAULT_PROMPT, Complete, LLMJudge

MAX_ITEMS = 100_000
MAX_LISTED_PROBLEMS = 100


class EvalItem(BaseModel):
    """One eval case."""

    model_config = ConfigDict(extra="allow")

    input: Any = Field(None, description="The task: text sent as a user message when `messages` is absent.")
    ideal: Any = Field(None, description="The expected answer, or a list of acceptable answers.")
    messages: list[dict[str, Any]] | None = Field(None, description="The chat sent to the model, if not just `input`.")

    @model_validator(mode="after")
    def _has_prompt(self) -> EvalItem:
        if self.input is None and not self.messages:
            raise ValueError('an item needs "input" or a non-empty "messages"')
        return self

    def chat(self) -> list[dict[str, Any]]:
        """The messages to send the model under evaluation."""
        if self.messages:
            return self.messages
        text = self.input if isinstance(self.input, str) else json.dumps(self.input, ensure_ascii=False)
        return [{"role": "user", "content": text}]


class _GraderBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="Name in reports; defaults to the grader type.")
    pass_threshold: float = Field(1.0, ge=0.0, le=1.0, description="A sample passes when its score is at least this.")


class ExactConfig(_GraderBase):
    type: Literal["exact"] = "exact"
    ignore_case: bool = Field(False, description="Compare case-insensitively.")
    collapse_whitespace: bool = Field(True, description="Trim and collapse runs of whitespace before comparing.")


class IncludesConfig(_GraderBase):
    type: Literal["includes"] = "includes"
    ignore_case: bool = Field(True, description="Search case-insensitively.")
    require_all: bool = Field(False, description="Score the share of ideals found instead of 1 for any one.")


class RegexConfig(_GraderBase):
    type: Literal["regex"] = "regex"
    pattern: str = Field(min_length=1, description="Python regular expression searched for in the sample.")
    ignore_case: bool = Field(False, description="Match case-insensitively.")
    invert: bool = Field(False, description="Pass when the pattern is NOT found (e.g. banned phrases).")


class JsonSchemaConfig(_GraderBase):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["json_schema"] = "json_schema"
    json_schema: dict[str, Any] = Field(alias="schema", description="JSON Schema the sample's JSON must satisfy.")


class PythonConfig(_GraderBase):
    type: Literal["python"] = "python"
    function: str = Field(min_length=3, description="Import path 'module:function' of f(item, sample).")


class LLMJudgeConfig(_GraderBase):
    type: Literal["llm_judge"] = "llm_judge"
    pass_threshold: float = Field(0.7, ge=0.0, le=1.0, description="A sample passes when its score is at least this.")
    score_max: float = Field(10.0, gt=0, description="The top of the scale the judge is asked to score on.")
    prompt: str = Field(DEFAULT_PROMPT, description="Template with {input}, {ideal}, {sample} and {score_max}.")
    system: str | None = Field(None, description="Optional system message for the judge.")
    model: str | None = Field(None, description="Model the judge runs on; the caller binds it to `complete`.")


GraderConfig = Annotated[
    ExactConfig | IncludesConfig | RegexConfig | JsonSchemaConfig | PythonConfig | LLMJudgeConfig,
    Field(discriminator="type"),
]


class SuiteConfig(BaseModel):
    """The suite file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Suite name, unique per project.")
    description: str = Field("", description="What the suite checks, for people.")
    items: str | list[dict[str, Any]] = Field(description="A JSONL path (relative to the suite file) or inline items.")
    graders: list[GraderConfig] = Field(min_length=1, description="Graders applied to every sample.")


def build_grader(config: GraderConfig, *, complete: Complete | None = None) -> Grader:
    """A ready grader from its config; raises SpecError on a bad pattern, schema or import path."""
    common = {"name": config.name or config.type, "pass_threshold": config.pass_threshold}
    match config:
        case ExactConfig():
            return ExactMatch(ignore_case=config.ignore_case, collapse_whitespace=config.collapse_whitespace, **common)
        case IncludesConfig():
            return Includes(ignore_case=config.ignore_case, require_all=config.require_all, **common)
        case RegexConfig():
            return RegexMatch(config.pattern, ignore_case=config.ignore_case, invert=config.invert, **common)
        case JsonSchemaConfig():
            return JsonSchemaMatch(config.json_schema, **common)
        case PythonConfig():
            return PythonFunction(config.function, **common)
        case LLMJudgeConfig():
            if complete is None:
                raise SpecError(f"grader {common['name']!r} is an llm_judge but no judge model was given; "
                                "pass complete= bound to a model")
            return LLMJudge(complete, prompt=config.prompt, score_max=config.score_max, system=config.system,
                            **common)  # type: ignore[return-value]
    raise SpecError(f"unknown grader type {config.type!r}")


def parse_items(lines: list[str] | list[dict[str, Any]], *, source: str = "items") -> list[EvalItem]:
    """Items from JSONL lines or dicts; raises SpecError listing every bad line by number."""
    items, problems = [], []
    for number, line in enumerate(lines, start=1):
        if isinstance(line, str) and not line.strip():
            continue
        try:
            data = json.loads(line) if isinstance(line, str) else line
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            items.append(EvalItem.model_validate(data))
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: invalid JSON: {exc.msg} at column {exc.colno}")
        except ValidationError as exc:
            problems += [f"line {number}: {'.'.join(map(str, e['loc'])) or 'item'}: {e['msg']}" for e in exc.errors()]
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
        if len(items) > MAX_ITEMS:
            raise SpecError(f"{source} has more than {MAX_ITEMS} items; split it into several suites")
    if problems:
        listed = problems[:MAX_LISTED_PROBLEMS]
        if len(problems) > MAX_LISTED_PROBLEMS:
            listed.append(f"... and {len(problems) - MAX_LISTED_PROBLEMS} more problems")
        raise SpecError(f"{source} has {len(problems)} problem(s); fix each line listed", listed)
    if not items:
        raise SpecError(f"{source} has no items; add one JSON object per line")
    return items


class Suite:
    """A loaded suite: its config, items and built graders."""

    def __init__(self, config: SuiteConfig, items: list[EvalItem], graders: list[Grader]) -> None:
        self.config, self.items, self.graders = config, items, graders

    @property
    def name(self) -> str:
        return self.config.name


def load_suite(path: str | Path, *, complete: Complete | None = None) -> Suite:
    """Load a suite file (YAML or JSON) and its items; every problem is reported in one SpecError."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"cannot read suite {path}: {exc}") from exc
    try:
        config = SuiteConfig.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"suite {path} is invalid",
                        [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]) from exc
    if isinstance(config.items, str):
        items_path = (path.parent / config.items).resolve()
        try:
            lines = items_path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise SpecError(f"suite {path}: cannot read items file {items_path}: {exc}") from exc
        items = parse_items(lines, source=str(items_path))
    else:
        items = parse_items(config.items, source=f"{path} items")
    graders, problems = [], []
    for index, grader_config in enumerate(config.graders):
        try:
            graders.append(build_grader(grader_config, complete=complete))
        except SpecError as exc:
            problems.append(f"graders.{index}: {exc.message}")
    if problems:
        raise SpecError(f"suite {path} has bad graders", problems)
    return Suite(config, items, graders)
