"""The compiled decode step: greedy tokens identical to the eager engine's (and to HF's) in
float32, across batch sizes and growing block tables, without compiling again once warm.

Compiling even the tiny model takes seconds, so one compiled engine serves the whole module.
"""

from __future__ import annotations

import logging
import time

import pytest
import torch

from slipway.engine.config import EngineConfig
from slipway.engine.engine import LLMEngine
from slipway.engine.sampling_params import SamplingParams

from ..conftest import hf_greedy, random_prompt

# Inductor's own imports touch a deprecated torch.jit helper.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

# Prompt lengths around block boundaries (block_size 4) and output lengths that make requests
# finish one by one, so the decode batch shrinks from 5 rows to 1.
PROMPT_LENGTHS = (1, 4, 5, 11, 16)
MAX_TOKENS = (3, 30, 9, 17, 24)
COMPILE_TIMEOUT_S = 600  # seconds on a quiet machine; generous for shared, busy cores


def make_engine(folder, **overrides) -> LLMEngine:
    settings = dict(dtype="float32", device="cpu", block_size=4, num_kv_blocks=128, max_model_len=256)
    settings.update(overrides)
    return LLMEngine(folder, EngineConfig(**settings))


@pytest.fixture(scope="module")
def compiled_engine(llama_checkpoint) -> LLMEngine:
    """An engine that compiled in the background while it served its first requests eagerly."""
    folder, model = llama_checkpoint
    engine = make_engine(folder, compile=True)
    assert engine.stats()["decode_compiled"] is False, "the compile runs behind a ready engine"
    outputs = run(engine)  # served now, eagerly, while the graph compiles
    for n, max_tokens, output in zip(PROMPT_LENGTHS, MAX_TOKENS, outputs):
        assert output == hf_greedy(model, random_prompt(n, seed=n), max_tokens)
    deadline = time.monotonic() + COMPILE_TIMEOUT_S
    while not engine.stats()["decode_compiled"]:
        assert time.monotonic() < deadline, f"the decode step did not compile within {COMPILE_TIMEOUT_S} s"
        time.sleep(0.2)
    return engine


def run(engine: LLMEngine) -> list[list[int]]:
    prompts = [random_prompt(n, seed=n) for n in PROMPT_LENGTHS]
    for index, (prompt, max_tokens) in enumerate(zip(prompts, MAX_TOKENS)):
        engine.add_request(f"r{index}", prompt, SamplingParams(temperature=0.0, max_tokens=max_tokens))
    tokens: dict[str, list[int]] = {f"r{i}": [] for i in range(len(prompts))}
    while engine.has_unfinished_requests():
        for output in engine.step():
            tokens[output.request_id] += output.outputs[0].token_ids
    return [tokens[f"r{i}"] for i in range(len(prompts))]


def test_compiled_greedy_tokens_equal_eager_and_hf(llama_checkpoint, compiled_engine):
    folder, model = llama_checkpoint
    assert compiled_engine.runner.compiled_decode is not None
    assert compiled_engine.stats()["compile_seconds"] > 0
    compiled = run(compiled_engine)
    assert compiled == run(make_engine(folder, compile=False))
    for n, max_tokens, output in zip(PROMPT_LENGTHS, MAX_TOKENS, compiled):
        assert output == hf_greedy(model, random_prompt(n, seed=n), max_tokens)
    assert compiled_engine.runner.compiled_decode.num_eager_fallbacks == 0, "no step needed a new graph"
    assert compiled_engine.kv.num_used_blocks == 0


def test_an_input_no_graph_accepts_runs_eagerly_with_a_warning(compiled_engine, caplog):
    compiled = compiled_engine.runner.compiled_decode
    tokens = torch.tensor([5, 6, 7], dtype=torch.int32)  # int32 ids: not the graph's input type
    positions = torch.tensor([0, 0, 0])
    tables = torch.zeros(3, 2, dtype=torch.long)
    before = compiled.num_eager_fallbacks
    with caplog.at_level(logging.WARNING, logger="slipway.engine.models.compiled"):
        logits, new_kv = compiled(tokens, positions, tables)
    assert compiled.num_eager_fallbacks == before + 1
    expected, _ = compiled_engine.runner.model.decode(tokens, positions, tables, compiled_engine.runner.kv_cache)
    torch.testing.assert_close(logits, expected)


def test_compile_is_off_for_tiny_models_unless_asked(llama_checkpoint):
    engine = make_engine(llama_checkpoint[0])
    assert engine.runner.compiled_decode is None
    assert engine.stats()["compile_seconds"] is None


def test_a_failed_compile_leaves_the_engine_eager(llama_checkpoint, monkeypatch, caplog):
    from slipway.engine.runner import ModelRunner

    def broken(self):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(ModelRunner, "enable_compiled_decode", broken)
    with caplog.at_level(logging.WARNING, logger="slipway.engine.build"):
        engine = make_engine(llama_checkpoint[0], compile=True, compile_in_background=False)
    assert engine.runner.compiled_decode is None
    assert "compiling the decode step failed" in caplog.text
    out = engine.generate([random_prompt(6, seed=1)], SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True))
    assert len(out[0].outputs[0].token_ids) == 4
