"""Errors the engine raises, placed in slipway's one hierarchy.

    SlipwayError
     +-- SpecError
     |    +-- EngineRequestError       a request the engine cannot serve as asked (400)
     |         +-- PromptTooLongError  the prompt leaves no room for a completion in max_model_len
     |         +-- LoraAdapterError    a folder that is not a LoRA adapter of this base (lora/adapter.py)
     +-- RuntimeLoadError
     |    +-- UnsupportedModelError    the weights folder holds an architecture or option we do not run
     +-- EngineError                   the engine itself failed or is overloaded (5xx)
          +-- EngineOverloadedError    the waiting queue is full; retry later (503)
          +-- EngineDeadError          a step raised; the engine stopped and must be rebuilt (500)
"""

from __future__ import annotations

from slipway.errors import RuntimeLoadError, SlipwayError, SpecError


class EngineRequestError(SpecError):
    """A request the engine cannot serve as asked; the message names the field and the fix."""

    code = "invalid_request"


class PromptTooLongError(EngineRequestError):
    code = "context_length_exceeded"


class UnsupportedModelError(RuntimeLoadError):
    code = "unsupported_model"


class EngineError(SlipwayError):
    status_code = 500
    error_type = "server_error"
    code = "engine_error"


class EngineOverloadedError(EngineError):
    status_code = 503
    code = "engine_overloaded"


class EngineDeadError(EngineError):
    code = "engine_dead"
