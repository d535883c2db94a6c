"""Trace redaction: what a captured request and response lose before they are written anywhere.

    redactor = load_redactor("mask_pii")              # a built-in, by name
    redactor = load_redactor("my_pkg.privacy:scrub")  # any callable, by "module:function"
    request = redactor(request)                       # a JSON value in, a JSON value out

A redactor is applied in the capture worker thread, to the parsed request and response
separately, before the trace reaches the journal. One that raises drops that trace: an
unredacted trace is never stored.

Built-ins:
    mask_pii    e-mail addresses -> "[email]"; runs of 6 or more digits (spaces and dashes
                between them allowed, as in card and phone numbers) -> "[number]"; in every
                string of the value, dict keys left as they are
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Callable

from slipway.errors import SpecError

Redactor = Callable[[Any], Any]

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_LONG_DIGITS = re.compile(r"\d(?:[ \-]?\d){5,}")


def mask_text(text: str) -> str:
    """`text` with e-mail addresses and long digit runs masked."""
    if "@" in text:
        text = _EMAIL.sub("[email]", text)
    return _LONG_DIGITS.sub("[number]", text)


def mask_pii(value: Any) -> Any:
    """Every string in a JSON value passed through `mask_text`."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {key: mask_pii(item) for key, item in value.items()}
    if isinstance(value, list):
        return [mask_pii(item) for item in value]
    return value


BUILT_IN_REDACTORS: dict[str, Redactor] = {"mask_pii": mask_pii}


def load_redactor(name: str | None) -> Redactor | None:
    """The redactor `name` names: a built-in, or "module:function"; None for None."""
    if name is None:
        return None
    if name in BUILT_IN_REDACTORS:
        return BUILT_IN_REDACTORS[name]
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise SpecError(f"trace_redactor {name!r} is neither a built-in ({', '.join(BUILT_IN_REDACTORS)}) nor a "
                        "'module:function' import path", code="invalid_config")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"trace_redactor {name!r}: module {module_name!r} cannot be imported ({exc}); check that "
                        "it is installed in the gateway's environment", code="invalid_config") from exc
    redactor = getattr(module, attribute, None)
    if not callable(redactor):
        raise SpecError(f"trace_redactor {name!r}: {module_name} has no function {attribute!r}",
                        code="invalid_config")
    return redactor
