"""Many LoRA adapters on one base engine: interleaved in one batch, each request's tokens are those
of its adapter merged into the base and served alone; the base is unaffected. Plus the adapter
table (lazy loads, LRU slots, waiting for a slot), prefix-cache isolation, validation errors,
merging, the batched product itself, the bfloat16 packed path and the async engine's threads.

Adapters are real PEFT adapters (random non-zero B: init_lora_weights=False) on the tiny random
models of conftest.py; references are PEFT's merge_and_unload() generating greedily in float32.
"""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from slipway.engine import (
    AsyncLLMEngine, EngineConfig, EngineRequestError, LLMEngine, LoraAdapterError, SamplingParams, accumulate,
)
from slipway.engine.kv import hash_prefix_blocks, reported_hash
from slipway.engine.lora import LoraBatch, LoraStack, LoraTable, inspect_adapter, load_fused_weights, merge_lora
from slipway.engine.lora import batch as lora_batch
from slipway.engine.models.config import ModelConfig
from slipway.engine.models.packed import PackedLinear, can_pack
from tests.engine.conftest import _save_model, hf_greedy, random_prompt

ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ADAPTERS = {  # name -> LoraConfig arguments: ranks, alphas, targets and rsLoRA all differ
    "a": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "b": dict(r=8, lora_alpha=16, target_modules=ALL_TARGETS),
    "c": dict(r=2, lora_alpha=4, target_modules=["gate_proj", "down_proj"], use_rslora=True),
    "d": dict(r=6, lora_alpha=3, target_modules=["k_proj", "up_proj", "o_proj"]),
}
MAX_TOKENS = 8


@dataclass
class Setup:
    base_folder: Path
    base: torch.nn.Module
    folders: dict[str, Path]
    merged: dict[str, torch.nn.Module]
    """PEFT's merge_and_unload() of each adapter: the reference."""

    def reference(self, name: str | None, prompt: list[int], max_tokens: int = MAX_TOKENS) -> list[int]:
        return hf_greedy(self.merged[name] if name else self.base, prompt, max_tokens)


def save_adapter(base: torch.nn.Module, folder: Path, seed: int, **settings) -> torch.nn.Module:
    """A random PEFT LoRA adapter of `base` saved in `folder`; returns it merged into a copy of `base`."""
    torch.manual_seed(seed)
    model = get_peft_model(copy.deepcopy(base), LoraConfig(init_lora_weights=False, **settings))
    model.save_pretrained(folder)
    return model.merge_and_unload().eval()


def make_setup(checkpoint: tuple[Path, torch.nn.Module], root: Path) -> Setup:
    base_folder, base = checkpoint
    folders, merged = {}, {}
    for seed, (name, settings) in enumerate(ADAPTERS.items()):
        folders[name] = root / name
        merged[name] = save_adapter(base, folders[name], seed=100 + seed, **settings)
    return Setup(base_folder, base, folders, merged)


@pytest.fixture(scope="session")
def setup(checkpoint, tmp_path_factory) -> Setup:
    """Both bases (llama, qwen2) with the four adapters."""
    return make_setup(checkpoint, tmp_path_factory.mktemp("adapters"))


@pytest.fixture(scope="session")
def llama_setup(llama_checkpoint, tmp_path_factory) -> Setup:
    return make_setup(llama_checkpoint, tmp_path_factory.mktemp("llama-adapters"))


def engine_for(setup: Setup, *, register: bool = True, **overrides) -> LLMEngine:
    """A float32 engine on the setup's base with its adapters registered; a 64-token step budget
    makes prompts run in chunks beside other sequences' decodes."""
    settings = dict(dtype="float32", device="cpu", max_model_len=256, num_kv_blocks=256,
                    max_num_batched_tokens=64)
    settings.update(overrides)
    engine = LLMEngine(setup.base_folder, EngineConfig(**settings))
    for name, folder in setup.folders.items() if register else ():
        engine.add_lora(name, folder)
    return engine


def run(engine: LLMEngine, requests: list[tuple[str, list[int], str | None]], max_tokens: int = MAX_TOKENS,
        on_step=None) -> dict[str, list[int]]:
    """Add every request before the first step (so they share batches), run to the end; tokens by id."""
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    for request_id, prompt, name in requests:
        engine.add_request(request_id, prompt, params, lora_name=name)
    deltas: dict[str, list] = {request_id: [] for request_id, _, _ in requests}
    while engine.has_unfinished_requests():
        for output in engine.step():
            deltas[output.request_id].append(output)
        if on_step is not None:
            on_step(engine)
    return {request_id: accumulate(outputs).outputs[0].token_ids for request_id, outputs in deltas.items()}


def mixed_requests(count: int = 15) -> list[tuple[str, list[int], str | None]]:
    """Prompts of many lengths (prefill chunks beside decodes), adapters and the base interleaved."""
    names = [None, "a", "b", "c", "d"]
    return [(f"r{i}", random_prompt(5 + 7 * i % 45, seed=i), names[i % len(names)]) for i in range(count)]


# -- the acceptance test ----------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["auto", "grouped", "stacked"])
def test_adapters_interleaved_in_one_batch_match_each_merged_alone_and_the_base_is_unaffected(
        setup, strategy, monkeypatch):
    if strategy == "grouped":
        monkeypatch.setattr(lora_batch, "MAX_GROUPED_RUNS", 10_000)
    elif strategy == "stacked":  # every row, prefill chunks included, times every adapter
        monkeypatch.setattr(lora_batch, "MAX_GROUPED_RUNS", 0)
        monkeypatch.setattr(lora_batch, "MAX_STACKED_SPAN", 10_000)
    engine = engine_for(setup)
    requests = mixed_requests()
    batch_sizes = []
    got = run(engine, requests, on_step=lambda e: batch_sizes.append(e.stats()["running"]))
    assert max(batch_sizes) == len(requests), "all requests ran in the same batches"
    assert engine.stats()["loras_loaded"] == len(ADAPTERS)
    for request_id, prompt, name in requests:
        assert got[request_id] == setup.reference(name, prompt), f"{request_id} with adapter {name}"
    # The adapters matter: each changes the greedy tokens of some prompt.
    for name in ADAPTERS:
        prompts = [prompt for _, prompt, n in requests if n == name]
        assert any(setup.reference(name, p) != setup.reference(None, p) for p in prompts), name


def test_speculative_drafts_are_verified_with_their_adapter(llama_setup):
    engine = engine_for(llama_setup, speculative={"num_speculative_tokens": 3})
    repetitive = [5, 6, 7, 5, 6, 7, 5, 6, 7, 5, 6]  # prompt lookup finds drafts at once
    requests = [(f"s{i}", repetitive[i:] + random_prompt(3, seed=i), name)
                for i, name in enumerate([None, "a", "b", "c", "d", "b"])]
    got = run(engine, requests, max_tokens=12)
    assert engine.stats()["spec_draft_tokens"] > 0
    for request_id, prompt, name in requests:
        assert got[request_id] == llama_setup.reference(name, prompt, 12)


def test_steps_without_adapted_rows_run_the_base_path(llama_setup):
    engine = engine_for(llama_setup)
    seen = []
    execute = engine.runner.execute
    engine.runner.execute = lambda inputs, lora=None: seen.append(lora) or execute(inputs, lora)
    prompt = random_prompt(20, seed=3)
    assert run(engine, [("base", prompt, None)])["base"] == llama_setup.reference(None, prompt)
    assert seen and all(lora is None for lora in seen)
    assert engine.stats()["loras_loaded"] == 0, "registered adapters load on first use only"


# -- the adapter table ------------------------------------------------------------------------------


def test_with_more_adapters_than_slots_requests_wait_for_a_slot_and_never_fail(llama_setup):
    engine = engine_for(llama_setup, max_loras=2)
    requests = [("a", random_prompt(12, seed=1), "a"), ("b", random_prompt(9, seed=2), "b"),
                ("c", random_prompt(10, seed=3), "c"), ("base", random_prompt(8, seed=4), None),
                ("d", random_prompt(11, seed=5), "d")]
    observed = []

    def watch(e: LLMEngine) -> None:
        waiting = {seq.request_id for seq in e.scheduler.waiting}
        observed.append((e.stats()["loras_loaded"], waiting))

    got = run(engine, requests, on_step=watch)
    for request_id, prompt, name in requests:
        assert got[request_id] == llama_setup.reference(name, prompt)
    assert max(loaded for loaded, _ in observed) == 2
    first_waiting = observed[0][1]
    assert first_waiting == {"c", "d"}, "c waits for a slot, d waits behind it, the base passes"


def test_the_least_recently_used_idle_adapter_is_evicted(llama_setup):
    config = ModelConfig.from_folder(llama_setup.base_folder)
    table = LoraTable(config, max_loras=2, max_lora_rank=64, dtype=torch.float32, device=torch.device("cpu"),
                      pack=False)
    a, b, c = (table.register(name, llama_setup.folders[name]) for name in "abc")
    assert table.num_loaded == 0
    assert table.acquire(a) and table.acquire(b)
    assert not table.acquire(c), "both slots are pinned"
    table.release(a)
    table.acquire(a)  # a is used again: b is now the least recently used
    table.release(a)
    table.release(b)
    assert table.acquire(c)
    assert table.is_loaded(a) and table.is_loaded(c) and not table.is_loaded(b)
    assert set(table.stack().slots) == {table.slot_of(a), table.slot_of(c)}


def test_removing_an_adapter_lets_running_requests_finish_then_frees_it(llama_setup):
    engine = engine_for(llama_setup)
    prompt = random_prompt(10, seed=8)
    engine.add_request("a", prompt, SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS), lora_name="a")
    outputs = engine.step()
    assert engine.remove_lora("a") and not engine.remove_lora("a")
    assert "a" not in engine.loras()
    with pytest.raises(EngineRequestError, match="no LoRA adapter named 'a'") as caught:
        engine.add_request("again", prompt, lora_name="a")
    assert caught.value.code == "lora_not_found"
    while engine.has_unfinished_requests():
        outputs += engine.step()
    assert accumulate(outputs).outputs[0].token_ids == llama_setup.reference("a", prompt)
    engine.step()
    assert engine.stats()["loras_loaded"] == 0 and engine.stats()["loras_registered"] == len(ADAPTERS) - 1


def test_an_adapter_whose_files_vanish_fails_its_requests_not_the_engine(llama_setup, tmp_path):
    folder = tmp_path / "doomed"
    shutil.copytree(llama_setup.folders["a"], folder)
    engine = engine_for(llama_setup)
    engine.add_lora("doomed", folder)
    shutil.rmtree(folder)
    with pytest.raises(LoraAdapterError, match="doomed"):
        engine.generate([random_prompt(6, seed=1)], SamplingParams(max_tokens=2), lora_name="doomed")
    prompt = random_prompt(6, seed=2)
    assert engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS))[0].outputs[0].token_ids \
        == llama_setup.reference(None, prompt)


# -- prefix caching -----------------------------------------------------------------------------------


def test_prefix_caching_never_shares_blocks_between_adapters_and_keeps_the_base_hashes(llama_setup):
    engine = engine_for(llama_setup)
    prompt = random_prompt(40, seed=11)
    params = SamplingParams(temperature=0.0, max_tokens=2)

    def cached_tokens(name: str | None) -> int:
        return engine.generate([prompt], params, lora_name=name)[0].num_cached_tokens

    assert cached_tokens(None) == 0
    base_hashes = [reported_hash(h) for h in hash_prefix_blocks(prompt, engine.kv.block_size)]
    assert set(base_hashes) <= set(engine.kv.recent_block_hashes(1000)), "the base's hashes are unchanged"
    assert cached_tokens("a") == 0 and cached_tokens("b") == 0, "no adapter reuses the base's blocks"
    assert cached_tokens("a") == 32 and cached_tokens(None) == 32, "each reuses its own"
    assert cached_tokens("c") == 0


# -- validation ---------------------------------------------------------------------------------------


def test_bad_adapter_folders_are_refused_with_the_file_and_the_fix(llama_setup, tmp_path):
    engine = engine_for(llama_setup, register=False, max_lora_rank=4)
    engine.add_lora("a", llama_setup.folders["a"])
    source = llama_setup.folders["a"]

    def variant(name: str, change=None) -> Path:
        folder = tmp_path / name
        shutil.copytree(source, folder)
        if change is not None:
            change(folder)
        return folder

    def set_config(**values):
        def change(folder: Path) -> None:
            settings = json.loads((folder / "adapter_config.json").read_text())
            settings.update(values)
            (folder / "adapter_config.json").write_text(json.dumps(settings))
        return change

    cases = {
        tmp_path / "nowhere": "no such folder",
        variant("no-config", lambda f: (f / "adapter_config.json").unlink()): "adapter_config.json is missing",
        variant("bin", lambda f: (f / "adapter_model.safetensors").rename(f / "adapter_model.bin")):
            "safe_serialization=True",
        llama_setup.folders["b"]: "r=8 exceeds max_lora_rank=4",
        variant("dora", set_config(use_dora=True)): "DoRA",
        variant("bias", set_config(bias="all")): "bias='none'",
        variant("prefix", set_config(peft_type="PREFIX_TUNING")): "LoRA adapters only",
    }
    for folder, message in cases.items():
        with pytest.raises(LoraAdapterError, match=message.replace("(", r"\(")) as caught:
            engine.add_lora("x", folder)
        assert isinstance(caught.value, EngineRequestError) and caught.value.code == "invalid_lora_adapter"
    with pytest.raises(LoraAdapterError, match="already registered from"):
        engine.add_lora("a", llama_setup.folders["c"])
    engine.add_lora("a", llama_setup.folders["a"])  # the same folder again: a no-op
    assert "x" not in engine.loras()


@pytest.mark.filterwarnings("ignore::UserWarning")  # PEFT's warnings about adapting the tied LM head
def test_adapters_of_another_base_or_of_unsupported_modules_are_refused(llama_setup, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    narrow = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2))
    save_adapter(narrow, tmp_path / "narrow", seed=1, r=2, target_modules=["q_proj"])
    save_adapter(llama_setup.base, tmp_path / "head", seed=1, r=2, target_modules=["lm_head"])
    config = ModelConfig.from_folder(llama_setup.base_folder)
    with pytest.raises(LoraAdapterError, match=r"shape \[2, 32\].*\[2, 64\].*another base model"):
        inspect_adapter("narrow", tmp_path / "narrow", config, max_lora_rank=64)
    with pytest.raises(LoraAdapterError, match="lm_head.*target_modules are among q_proj"):
        inspect_adapter("head", tmp_path / "head", config, max_lora_rank=64)


# -- merging ------------------------------------------------------------------------------------------


def test_merged_deployment_serves_the_adapter_as_its_base(llama_setup):
    config = EngineConfig(dtype="float32", device="cpu", max_model_len=256, num_kv_blocks=64,
                          merge_adapter=str(llama_setup.folders["b"]))
    engine = LLMEngine(llama_setup.base_folder, config)
    prompts = [random_prompt(9 + i, seed=20 + i) for i in range(3)]
    outputs = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS))
    assert [o.outputs[0].token_ids for o in outputs] == [llama_setup.reference("b", p) for p in prompts]
    # The fused weights equal PEFT's merged ones, q/k/v and gate/up side by side.
    reference = llama_setup.merged["b"].model.layers[1]
    ours = engine.runner.model.layers[1]
    torch.testing.assert_close(ours.self_attn.qkv_proj.weight, torch.cat(
        [reference.self_attn.q_proj.weight, reference.self_attn.k_proj.weight, reference.self_attn.v_proj.weight]))
    torch.testing.assert_close(ours.mlp.gate_up_proj.weight,
                               torch.cat([reference.mlp.gate_proj.weight, reference.mlp.up_proj.weight]))


def test_merge_lora_refuses_packed_layers(llama_setup):
    if not can_pack(torch.device("cpu"), torch.bfloat16):
        pytest.skip("this torch build has no oneDNN bfloat16 linear")
    engine = LLMEngine(llama_setup.base_folder, EngineConfig(dtype="bfloat16", device="cpu", max_model_len=64,
                                                             num_kv_blocks=16))
    with pytest.raises(LoraAdapterError, match="before packing"):
        merge_lora(engine.runner.model, llama_setup.folders["a"])


# -- the batched product ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_and_stacked_products_add_each_rows_own_adapter(llama_setup, dtype):
    """LoraBatch on one fused layer against a plain per-row loop, for both strategies."""
    pack = dtype == torch.bfloat16 and can_pack(torch.device("cpu"), dtype)
    config = ModelConfig.from_folder(llama_setup.base_folder)
    weights = {slot: load_fused_weights(inspect_adapter(name, llama_setup.folders[name], config, max_lora_rank=64),
                                        config, dtype=dtype, device="cpu")
               for slot, name in enumerate("abcd")}
    stack = LoraStack.build(weights, pack=pack)
    # Rows: a prefill span (slot 1), base rows, then decodes of slots 0, 0, 3, 1, 2 and a base decode.
    spans = [(0, 20, 1), (26, 1, 0), (27, 1, 0), (28, 1, 3), (29, 1, 1), (30, 1, 2)]
    x = torch.randn(32, config.hidden_size).to(dtype)
    base = torch.randn(32, (config.num_heads + 2 * config.num_kv_heads) * config.head_dim).to(dtype)
    expected = base.float().clone()
    for start, length, slot in spans:
        pair = weights[slot].get((0, "qkv_proj"))
        if pair is not None:
            rows = slice(start, start + length)
            expected[rows] += x[rows].float() @ pair.a.float().t() @ pair.b.float()
    tolerance = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=0.1, rtol=0.05)
    for max_grouped_runs in (10_000, 0):  # grouped, stacked
        batch = LoraBatch(stack, spans, max_grouped_runs=max_grouped_runs)
        assert (batch.region is None) == (max_grouped_runs > 0)
        got = batch.layer(0).apply("qkv_proj", x, base.clone())
        torch.testing.assert_close(got.float(), expected, **tolerance)
    # A stacked region covering the whole batch takes the fused-add path.
    whole = LoraBatch(stack, [(i, 1, i % 4) for i in range(32)], max_grouped_runs=0)
    expected_whole = base.float().clone()
    for i in range(32):
        pair = weights[i % 4].get((0, "qkv_proj"))
        if pair is not None:
            expected_whole[i] += x[i].float() @ pair.a.float().t() @ pair.b.float()
    torch.testing.assert_close(whole.layer(0).apply("qkv_proj", x, base.clone()).float(), expected_whole, **tolerance)


def test_bfloat16_engine_serves_adapters_on_packed_layers(llama_setup):
    engine = engine_for(llama_setup, dtype="bfloat16")
    if can_pack(torch.device("cpu"), torch.bfloat16):
        assert isinstance(engine.runner.model.layers[0].self_attn.qkv_proj, PackedLinear)
    requests = mixed_requests(10)
    got = run(engine, requests)
    assert all(len(tokens) == MAX_TOKENS for tokens in got.values())
    if can_pack(torch.device("cpu"), torch.bfloat16):
        assert all(layer.packed_a is not None for layer in engine.lora_table.stack().layers.values())


# -- the async engine ---------------------------------------------------------------------------------


async def test_async_engine_registers_adapters_while_it_steps(llama_setup):
    engine = AsyncLLMEngine(LLMEngine(llama_setup.base_folder, EngineConfig(
        dtype="float32", device="cpu", max_model_len=256, num_kv_blocks=64)))
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)
    long = SamplingParams(temperature=0.0, max_tokens=60, ignore_eos=True)
    prompt = random_prompt(10, seed=30)

    async def collect(stream) -> list[int]:
        return accumulate([output async for output in stream]).outputs[0].token_ids

    try:
        background = asyncio.ensure_future(collect(engine.generate(random_prompt(8, seed=31), long)))
        while engine.stats()["generated_tokens"] < 2:  # the engine thread is stepping
            await asyncio.sleep(0.01)
        for name in "ab":
            await engine.add_lora(name, llama_setup.folders[name])
        assert engine.loras() == ["a", "b"] and engine.lora_folders()["a"] == llama_setup.folders["a"].resolve()
        got = await asyncio.gather(*(collect(engine.generate(prompt, params, lora_name=name))
                                     for name in ("a", "b", None)))
        assert got == [llama_setup.reference(name, prompt) for name in ("a", "b", None)]
        assert len(await background) == 60
        with pytest.raises(EngineRequestError, match="no LoRA adapter named 'zzz'"):
            await collect(engine.generate(prompt, params, lora_name="zzz"))
        assert await engine.remove_lora("a") and not await engine.remove_lora("a")
        deadline = asyncio.get_running_loop().time() + 5
        while engine.stats()["loras_loaded"] != 1:  # the idle engine thread dropped a's weights
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        assert engine.stats()["loras_registered"] == 1
    finally:
        await engine.shutdown()
