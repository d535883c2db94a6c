"""The runtime contract: what a replica runs over one model package.

A `Runtime` is built from a parsed package (`create_runtime(spec, package_dir)`), loaded once,
then called concurrently from one asyncio event loop by the replica server:

    create_runtime(spec, dir) ──► await load() ──► predict / embeddings / chat_completions ...
                                       │                        (any number, concurrently)
                                 raises: the replica exits      stats() at any time
                                 with EXIT_LOAD_FAILED          await close() once at the end

Rules every runtime keeps:
- `load()` does the slow work (imports, weights); nothing slow happens in `__init__`.
- No method blocks the event loop: CPU-bound work runs in a worker thread.
- `predict(body)` takes the parsed JSON request body and returns either a JSON-able value, or an
  async iterator of chunks (`dict`/`list` -> one JSON event, `str` -> one text event, `bytes`
  -> sent as they are) when the result streams.
- A route the runtime does not serve raises `UnsupportedRouteError` (404); a request it cannot
  accept raises `BadRequestError` (400, naming the field in `param`). Any other exception is a
  failure of the model and becomes a 500 carrying its message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, AsyncIterator, ClassVar, Union

from pydantic import ValidationError

from slipway.errors import NotFoundError, SpecError
from slipway.spec.openai import EmbeddingsRequest, EmbeddingsResponse

Chunk = Union[bytes, str, dict, list]
PredictResult = Union[Any, AsyncIterator[Chunk]]


class BadRequestError(SpecError):
    """A request the runtime cannot accept (400); `param` names the offending field."""

    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.param = param


class UnsupportedRouteError(NotFoundError):
    """This runtime's kind does not serve the route that was called (404)."""

    code = "unsupported_route"


def bad_request_from_validation(exc: ValidationError, *, what: str = "request body") -> BadRequestError:
    """One 400 naming every field pydantic rejected, with the first one as `param`."""
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error.get("loc", ())) or "(body)"
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        problems.append(f"{field}: {message}")
    first = exc.errors()[0].get("loc", ()) if exc.errors() else ()
    param = ".".join(str(part) for part in first) or None
    return BadRequestError(f"invalid {what}: " + "; ".join(problems), param=param)


def is_stream(result: Any) -> bool:
    """True when a runtime's result is an async iterator of chunks rather than a JSON value."""
    return hasattr(result, "__aiter__") and not isinstance(result, (str, bytes, dict, list))


class Runtime(ABC):
    """One loaded model package serving requests; see the module docstring for the contract."""

    kind: ClassVar[str]

    @abstractmethod
    async def load(self) -> None:
        """Import code and read weights; raise if the package cannot serve."""

    @abstractmethod
    async def predict(self, body: Any) -> PredictResult:
        """Answer `POST /predict`: a JSON-able value, or an async iterator of chunks to stream."""

    async def embeddings(self, request: EmbeddingsRequest) -> EmbeddingsResponse:
        """Answer `POST /v1/embeddings` (OpenAI shape)."""
        raise UnsupportedRouteError(
            f"this replica runs a kind '{self.kind}' model, which does not serve /v1/embeddings; "
            "call /predict, or deploy a kind 'embedding' package"
        )

    async def chat_completions(self, body: dict[str, Any]) -> PredictResult:
        """Answer `POST /v1/chat/completions` (OpenAI shape); streams when `stream` is true."""
        raise UnsupportedRouteError(
            f"this replica runs a kind '{self.kind}' model, which does not serve /v1/chat/completions; "
            "the llm runtime does: deploy a kind 'llm' package"
        )

    async def completions(self, body: dict[str, Any]) -> PredictResult:
        """Answer `POST /v1/completions` (OpenAI shape); streams when `stream` is true."""
        raise UnsupportedRouteError(
            f"this replica runs a kind '{self.kind}' model, which does not serve /v1/completions; "
            "the llm runtime does: deploy a kind 'llm' package"
        )

    def stats(self) -> dict[str, Any]:
        """Cheap, JSON-able counters for `GET /stats` (e.g. running, waiting)."""
        return {}

    async def close(self) -> None:
        """Release threads and memory; called once when the replica stops."""
