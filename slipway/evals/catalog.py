"""Suites as the store keeps them: upload (items JSONL + grader configs), load for a run, gate decisions.

    SuiteCatalog(store, home)
      create(workspace, name, items, graders)   every bad line and grader reported ─► items file ─► row
      load(row, complete=...)                   row ─► Suite (items parsed, graders built)
      decide_gate(...)                          evals.gate.decide, for the control plane's gate route

Items live content-addressed in $SLIPWAY_HOME/evals/items/<sha256>.jsonl, written (atomically)
before the row is inserted, so a row always names a complete file and a bad upload leaves no row.
The row's `definition` holds the suite config without its items: name, description, graders and
`sampling` (temperature, max_tokens, concurrency of the runs).

The control plane reaches this through `slipway.control.evaluation.EvalService`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slipway.errors import SpecError
from slipway.evals.gate import GateSpec, decide
from slipway.evals.judge import Complete
from slipway.evals.suite import LLMJudgeConfig, Suite, SuiteConfig, build_grader, parse_items
from slipway.store import EvalSuiteRow, Store

ITEMS_DIR = Path("evals") / "items"


class Sampling(BaseModel):
    """How a run asks the model under evaluation."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature; 0 for repeatable runs.")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens per answer (None: the server's default).")
    concurrency: int = Field(4, ge=1, le=64, description="Items in flight at once against the target.")


async def _never_called(messages: list[dict[str, str]]) -> str:  # binds a judge for validation only
    raise AssertionError("a judge built to validate a suite is never called")


class SuiteCatalog:
    """Suite rows and their items files under `home`/evals/items."""

    def __init__(self, store: Store, home: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.items_root = Path(home) / ITEMS_DIR
        self._clock = clock

    def create(self, workspace_id: str, *, name: str, items: str | list[dict[str, Any]],
               graders: list[dict[str, Any]], description: str = "",
               sampling: dict[str, Any] | None = None) -> EvalSuiteRow:
        """Validate everything, write the items file, insert the row; SpecError lists every problem."""
        lines = items.splitlines() if isinstance(items, str) else items
        parsed = parse_items(lines, source=f"suite {name!r} items")
        config, settings = self._check(name, description, graders, sampling)
        canonical = "".join(json.dumps(item.model_dump(exclude_none=True), ensure_ascii=False, sort_keys=True) + "\n"
                            for item in parsed).encode()
        digest = hashlib.sha256(canonical).hexdigest()
        path = self.items_root / f"{digest}.jsonl"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_name(f".tmp-{os.getpid()}-{digest}")
            staging.write_bytes(canonical)
            os.replace(staging, path)
        definition = {"name": config.name, "description": config.description,
                      "graders": [g.model_dump(mode="json", by_alias=True, exclude_none=True) for g in config.graders],
                      "sampling": settings.model_dump(mode="json")}
        return self.store.evals.create_suite(workspace_id, name=name, definition=definition, items_path=str(path),
                                             items_hash=digest, num_items=len(parsed), now=self._clock())

    def load(self, row: EvalSuiteRow, *, complete_for: Callable[[str], Complete] | None = None) -> Suite:
        """The suite of a row; `complete_for(model)` binds each llm_judge grader to its judge model."""
        config = SuiteConfig.model_validate({**{k: v for k, v in row.definition.items() if k != "sampling"},
                                             "items": row.items_path})
        try:
            lines = Path(row.items_path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise SpecError(f"suite {row.name!r}: its items file {row.items_path} cannot be read ({exc}); "
                            "upload the suite again under a new name") from exc
        items = parse_items(lines, source=row.items_path)
        graders = []
        for grader_config in config.graders:
            complete = None
            if isinstance(grader_config, LLMJudgeConfig) and complete_for is not None:
                complete = complete_for(grader_config.model or "")
            graders.append(build_grader(grader_config, complete=complete))
        return Suite(config, items, graders)

    @staticmethod
    def sampling(row: EvalSuiteRow) -> Sampling:
        return Sampling.model_validate(row.definition.get("sampling") or {})

    @staticmethod
    def decide_gate(*, suite: str, min_score: float, no_regression: bool, candidate_mean: float,
                    production_mean: float | None) -> tuple[bool, str]:
        decision = decide(GateSpec(suite=suite, min_score=min_score, no_regression=no_regression),
                          candidate_mean, production_mean)
        return decision.promote, decision.message

    # ---- validation ----------------------------------------------------------------------------

    @staticmethod
    def _check(name: str, description: str, graders: list[dict[str, Any]],
               sampling: dict[str, Any] | None) -> tuple[SuiteConfig, Sampling]:
        problems: list[str] = []
        try:
            config = SuiteConfig.model_validate({"name": name, "description": description, "items": [],
                                                 "graders": graders})
        except ValidationError as exc:
            raise SpecError(f"suite {name!r} is invalid; fix each field listed",
                            [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()],
                            code="invalid_suite") from None
        for index, grader_config in enumerate(config.graders):
            if isinstance(grader_config, LLMJudgeConfig) and not grader_config.model:
                problems.append(f"graders.{index}: an llm_judge needs `model`, the deployed model that judges "
                                "(e.g. \"judge\" or \"judge@production\")")
                continue
            try:
                build_grader(grader_config, complete=_never_called)
            except SpecError as exc:
                problems.append(f"graders.{index}: {exc.message}")
        try:
            settings = Sampling.model_validate(sampling or {})
        except ValidationError as exc:
            problems += [f"sampling.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            settings = Sampling()
        if problems:
            raise SpecError(f"suite {name!r} has bad graders or settings", problems, code="invalid_suite")
        return config, settings
