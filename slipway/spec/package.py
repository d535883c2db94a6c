"""The model package: `slipway.yaml` parsed into typed, validated models.

A package is a folder with a `slipway.yaml` and, for `kind: custom`, a `model.py`. This module
owns the schema and the parse: text in, a `PackageSpec` or a `SpecError` listing every problem
(file, field, what is wrong, how to fix it) out. Reading the folder is the caller's job; this
module does no I/O.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from slipway.errors import SpecError

PACKAGE_FILE = "slipway.yaml"
CUSTOM_MODEL_FILE = "model.py"

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|K|M|G|T)?\s*$")

Kind = Literal["custom", "embedding", "llm"]
Engine = Literal["builtin", "vllm"]
RoutingPolicyName = Literal["round_robin", "least_load", "prefix_aware", "kv_aware"]


def parse_duration(value: Any) -> float:
    """Seconds from `90`, `90s`, `1.5m`, `250ms`, `1h`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            number, unit = float(match.group(1)), match.group(2) or "s"
            return number * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
    raise ValueError(f"{value!r} is not a duration; write a number of seconds or e.g. '60s', '5m', '250ms'")


def parse_memory(value: Any) -> int:
    """Bytes from `512Mi`, `2Gi`, `1G`, or a plain number of bytes."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        match = _MEMORY.match(value)
        if match:
            number, unit = float(match.group(1)), match.group(2) or ""
            scale = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                     "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[unit]
            return int(number * scale)
    raise ValueError(f"{value!r} is not an amount of memory; write e.g. '512Mi' or '2Gi'")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Resources(_Strict):
    """What one replica needs from the machine it runs on."""

    cpu: float = Field(1.0, gt=0, description="CPU cores one replica needs.")
    memory: str = Field("2Gi", description="Memory one replica needs, e.g. '512Mi' or '2Gi'.")
    accelerator: str | None = Field(None, description="Accelerator and count like 'H100:1'; null runs on CPU.")

    @field_validator("memory")
    @classmethod
    def _memory_parses(cls, value: str) -> str:
        parse_memory(value)
        return value

    @field_validator("accelerator")
    @classmethod
    def _accelerator_shape(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z0-9-]+(:\d+)?$", value):
            raise ValueError(f"{value!r} is not an accelerator; write e.g. 'H100:1' or 'L4'")
        return value

    @property
    def memory_bytes(self) -> int:
        return parse_memory(self.memory)


class Autoscaling(_Strict):
    """How a deployment's replica count follows its load (Baseten's names)."""

    min_replica: int = Field(1, ge=0, description="Fewest replicas; 0 scales to zero after idle.")
    max_replica: int = Field(1, ge=1, description="Most replicas.")
    concurrency_target: int = Field(8, ge=1, description="In-flight requests one replica is sized for.")
    target_utilization_percentage: int = Field(
        70, ge=1, le=100, description="Share of concurrency_target to aim for before adding a replica."
    )
    autoscaling_window: float = Field(60.0, gt=0, description="Seconds of load averaged for a decision.")
    scale_down_delay: float = Field(900.0, ge=0, description="Seconds load must stay low before removing replicas.")

    @field_validator("autoscaling_window", "scale_down_delay", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _bounds(self) -> "Autoscaling":
        if self.min_replica > self.max_replica:
            raise ValueError(
                f"min_replica ({self.min_replica}) is greater than max_replica ({self.max_replica}); "
                "raise max_replica or lower min_replica"
            )
        return self


class RuntimeSettings(_Strict):
    """Settings of the runtime inside a replica; most matter to `kind: llm`."""

    max_model_len: int = Field(2048, ge=16, description="Longest prompt plus completion, in tokens.")
    max_num_seqs: int = Field(64, ge=1, description="Most sequences decoded in one batch.")
    block_size: int = Field(16, ge=1, description="Tokens per KV-cache block.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weight precision; auto picks per machine."
    )
    python: str | None = Field(None, description="Interpreter for an external engine (vllm).")
    max_batch_size: int = Field(32, ge=1, description="Most inputs an embedding model encodes in one batch.")
    merge_adapter: str | None = Field(
        None, description="llm, builtin engine: a PEFT LoRA folder (relative to the package, absolute, or "
                          "pkg:<package>/<path>) folded into the base weights at load; the replica then serves "
                          "the merged model as its own. For one winning adapter served at the base's speed.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables for the replica.")


class PackageSpec(_Strict):
    """A model package: the parsed `slipway.yaml`."""

    name: str = Field(pattern=NAME_PATTERN, description="Model name: lowercase letters, digits and dashes.")
    kind: Kind = Field(description="custom (model.py), embedding, or llm.")
    engine: Engine | None = Field(None, description="llm only: builtin or vllm.")
    weights: str | None = Field(
        None, description="A Hugging Face folder (relative to the package) or pkg:<python package>/<path>."
    )
    adapters: dict[str, str] = Field(default_factory=dict, description="Adapter name -> PEFT LoRA folder.")
    resources: Resources = Field(default_factory=Resources)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    routing: RoutingPolicyName = Field("least_load", description="How the gateway picks a replica.")
    capture: bool = Field(False, description="Store request/response traces for the learning loop.")
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    description: str = Field("", description="One line shown in listings.")

    @model_validator(mode="after")
    def _kind_rules(self) -> "PackageSpec":
        if self.kind == "llm":
            if self.engine is None:
                self.engine = "builtin"
            if not self.weights:
                raise ValueError("kind 'llm' needs 'weights': a Hugging Face folder or pkg:<package>/<file>")
        elif self.engine is not None:
            raise ValueError(f"'engine' applies to kind 'llm' only; remove it for kind '{self.kind}'")
        if self.kind == "embedding" and not self.weights:
            raise ValueError("kind 'embedding' needs 'weights': a sentence-transformers folder or pkg:<package>/<path>")
        if self.adapters and self.kind != "llm":
            raise ValueError("'adapters' apply to kind 'llm' only")
        if self.runtime.merge_adapter and (self.kind != "llm" or self.engine != "builtin"):
            raise ValueError("runtime.merge_adapter applies to kind 'llm' with engine 'builtin' only; for vllm, "
                             "serve the adapter under 'adapters' instead")
        return self


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _problem_for(error: dict[str, Any]) -> str:
    loc = _field_path(tuple(error.get("loc", ())))
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return f"{loc}: unknown field; remove it or check its spelling"
    if kind == "missing":
        return f"{loc}: required field is missing; add it"
    if kind == "string_pattern_mismatch" and loc == "name":
        return f"name: {error.get('input')!r} is not a valid name; use lowercase letters, digits and dashes"
    if kind == "literal_error":
        return f"{loc}: {error.get('msg')} (got {error.get('input')!r})"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{loc}: {message}"


def parse_package(text: str, *, source: str = PACKAGE_FILE) -> PackageSpec:
    """Parse `slipway.yaml` text; raise `SpecError` naming `source` and every problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{source}: not valid YAML{where}: {problem}; fix the syntax", code="invalid_package") from None
    if not isinstance(data, dict):
        raise SpecError(
            f"{source}: expected a mapping of fields (name, kind, ...), got {type(data).__name__}",
            code="invalid_package",
        )
    try:
        return PackageSpec.model_validate(data)
    except ValidationError as exc:
        problems = [_problem_for(err) for err in exc.errors()]
        raise SpecError(f"{source}: {len(problems)} problem(s)", problems, code="invalid_package") from None


def check_package_files(spec: PackageSpec, files: set[str], *, source: str) -> None:
    """Check the files a package of this kind needs are present (`files`: names at the top of the folder)."""
    if spec.kind == "custom" and CUSTOM_MODEL_FILE not in files:
        raise SpecError(
            f"{source}: kind 'custom' needs a {CUSTOM_MODEL_FILE} with `class Model` beside slipway.yaml; "
            "add one (slipway init NAME --kind custom writes a template)",
            code="invalid_package",
        )
