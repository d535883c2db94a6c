"""LLMEngine against Hugging Face's own greedy decoding, token for token, in float32."""

from __future__ import annotations

import pytest

from slipway.engine.config import EngineConfig, SpeculativeConfig
from slipway.engine.engine import LLMEngine
from slipway.engine.errors import EngineOverloadedError, EngineRequestError, PromptTooLongError
from slipway.engine.outputs import accumulate
from slipway.engine.sampling_params import SamplingParams

from .conftest import hf_greedy, random_prompt

GREEDY = SamplingParams(temperature=0.0, max_tokens=24)


def make_engine(folder, **overrides) -> LLMEngine:
    settings = dict(dtype="float32", device="cpu", block_size=4, num_kv_blocks=128, max_model_len=256)
    settings.update(overrides)
    return LLMEngine(folder, EngineConfig(**settings))


def assert_matches_hf(engine: LLMEngine, model, prompts, params=GREEDY) -> None:
    outputs = engine.generate(prompts, params)
    for prompt, output in zip(prompts, outputs):
        assert output.outputs[0].token_ids == hf_greedy(model, prompt, params.max_tokens)
    assert engine.kv.num_used_blocks == 0, "every block is released once all requests end"


def test_single_request_matches_hf(checkpoint):
    folder, model = checkpoint
    assert_matches_hf(make_engine(folder), model, [random_prompt(11, seed=0)])


def test_batched_mixed_lengths_match_hf(checkpoint):
    folder, model = checkpoint
    prompts = [random_prompt(n, seed=n) for n in (1, 3, 8, 13, 21, 34)]
    engine = make_engine(folder)
    assert_matches_hf(engine, model, prompts)
    assert engine.stats()["num_steps"] < len(prompts) * GREEDY.max_tokens, "requests shared steps"


def test_prefix_cache_hits_keep_output_exact(llama_checkpoint):
    folder, model = llama_checkpoint
    engine = make_engine(folder)
    shared = random_prompt(18, seed=5)
    first = engine.generate([shared + [7, 8, 9]], GREEDY)[0]
    assert first.num_cached_tokens == 0
    prompts = [shared + [10, 11], shared + random_prompt(6, seed=6)]
    outputs = engine.generate(prompts, GREEDY)
    assert all(o.num_cached_tokens == 16 for o in outputs), "four full blocks of the shared prefix are reused"
    assert engine.stats()["prefix_cache_hit_tokens"] >= 32
    for prompt, output in zip(prompts, outputs):
        assert output.outputs[0].token_ids == hf_greedy(model, prompt, GREEDY.max_tokens)


def test_prompt_fully_cached_still_computes_its_last_token(llama_checkpoint):
    folder, model = llama_checkpoint
    engine = make_engine(folder)
    prompt = random_prompt(16, seed=9)  # exactly four blocks
    engine.generate([prompt], GREEDY)
    again = engine.generate([prompt], GREEDY)[0]
    assert again.num_cached_tokens == 12
    assert again.outputs[0].token_ids == hf_greedy(model, prompt, GREEDY.max_tokens)


def test_chunked_prefill_beside_decodes_matches_hf(checkpoint):
    folder, model = checkpoint
    engine = make_engine(folder, max_num_batched_tokens=8, enable_prefix_caching=False)
    prompts = [random_prompt(3, seed=1), random_prompt(45, seed=2), random_prompt(19, seed=3)]
    assert_matches_hf(engine, model, prompts)


def test_short_prompts_first_and_long_ones_in_small_chunks_match_hf(checkpoint):
    folder, model = checkpoint
    engine = make_engine(folder, max_num_batched_tokens=16, short_prefill_tokens=5,
                         enable_prefix_caching=False)
    prompts = [random_prompt(45, seed=4), random_prompt(3, seed=5), random_prompt(19, seed=6)]
    assert_matches_hf(engine, model, prompts)


def test_preemption_by_recompute_matches_hf(checkpoint):
    folder, model = checkpoint
    # 12 blocks of 4 tokens: three 16-token requests growing to 40 tokens cannot all fit.
    engine = make_engine(folder, num_kv_blocks=12, max_model_len=48)
    prompts = [random_prompt(16, seed=s) for s in (11, 12, 13)]
    assert_matches_hf(engine, model, prompts)
    assert engine.stats()["num_preemptions"] > 0


def test_speculative_decoding_is_exact_and_accepts_drafts(checkpoint):
    folder, model = checkpoint
    speculative = SpeculativeConfig(num_speculative_tokens=3, prompt_lookup_max=2)
    engine = make_engine(folder, speculative=speculative)
    prompts = [random_prompt(6, seed=s) * 3 for s in (21, 22)] + [random_prompt(9, seed=23)]
    assert_matches_hf(engine, model, prompts, SamplingParams(temperature=0.0, max_tokens=32))
    stats = engine.stats()
    assert stats["spec_draft_tokens"] > 0
    assert 0 < stats["spec_accepted_tokens"] <= stats["spec_draft_tokens"]
    assert stats["spec_acceptance_rate"] == stats["spec_accepted_tokens"] / stats["spec_draft_tokens"]


def test_speculative_with_chunking_and_preemption_stays_exact(llama_checkpoint):
    folder, model = llama_checkpoint
    engine = make_engine(folder, num_kv_blocks=14, max_model_len=48, max_num_batched_tokens=10,
                         speculative=SpeculativeConfig(num_speculative_tokens=4))
    prompts = [random_prompt(5, seed=s) * 3 for s in (31, 32, 33)]
    assert_matches_hf(engine, model, prompts)


def test_n_choices_share_the_prompt_blocks(llama_checkpoint):
    folder, model = llama_checkpoint
    engine = make_engine(folder, enable_prefix_caching=False)
    prompt = random_prompt(14, seed=40)
    engine.add_request("r", prompt, SamplingParams(n=3, temperature=0.0, max_tokens=6))
    deltas = engine.step()  # the first choice prefills; the others fork its full blocks
    parent, *children = engine._requests["r"]
    shared = engine.kv.block_table(parent.seq_id)[:3]
    for child in children:
        assert engine.kv.block_table(child.seq_id)[:3] == shared
        assert child.num_computed_tokens == 12
    assert all(engine.kv.pool.ref_counts[b] == 3 for b in shared)
    while engine.has_unfinished_requests():
        deltas += engine.step()
    result = accumulate(deltas)
    expected = hf_greedy(model, prompt, 6)
    assert [c.index for c in result.outputs] == [0, 1, 2]
    assert all(c.token_ids == expected for c in result.outputs)
    assert engine.kv.num_used_blocks == 0


def test_seeded_sampling_reproduces_and_choices_differ(llama_checkpoint):
    folder, _ = llama_checkpoint
    params = SamplingParams(n=2, temperature=1.0, seed=1234, max_tokens=16)
    first = make_engine(folder).generate([random_prompt(7, seed=50)], params)[0]
    # Another engine, with other requests in the batch: the seed alone decides.
    engine = make_engine(folder)
    noise = random_prompt(12, seed=51)
    second = engine.generate([noise, random_prompt(7, seed=50), noise], params)[1]
    assert [c.token_ids for c in first.outputs] == [c.token_ids for c in second.outputs]
    assert first.outputs[0].token_ids != first.outputs[1].token_ids


def test_stop_strings_cut_the_text_and_stream_consistently(llama_checkpoint):
    folder, _ = llama_checkpoint
    engine = make_engine(folder)
    prompt = random_prompt(9, seed=60)
    free = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=30))[0].outputs[0]
    stop = free.text[5:8]
    assert len(stop) == 3 and free.text.find(stop) == 5
    engine.add_request("s", prompt, SamplingParams(temperature=0.0, max_tokens=30, stop=[stop, "never"]))
    deltas = []
    while engine.has_unfinished_requests():
        deltas += engine.step()
    streamed = "".join(c.text for d in deltas for c in d.outputs)
    result = accumulate(deltas).outputs[0]
    assert result.text == streamed == free.text[:5]
    assert (result.finish_reason, result.stop_reason) == ("stop", stop)
    assert free.token_ids[: len(result.token_ids)] == result.token_ids


def test_stop_token_ids_eos_and_max_tokens(llama_checkpoint):
    folder, _ = llama_checkpoint
    engine = make_engine(folder)
    prompt = random_prompt(10, seed=70)
    free = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True))[0].outputs[0]
    assert (len(free.token_ids), free.finish_reason) == (12, "length")
    stop_id = free.token_ids[4]
    stopped = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=12, stop_token_ids=[stop_id]))
    choice = stopped[0].outputs[0]
    assert choice.token_ids == free.token_ids[: free.token_ids.index(stop_id) + 1]
    assert (choice.finish_reason, choice.stop_reason) == ("stop", stop_id)


def test_length_limit_of_the_model(llama_checkpoint):
    folder, _ = llama_checkpoint
    engine = make_engine(folder, max_model_len=20)
    out = engine.generate([random_prompt(15, seed=80)], SamplingParams(temperature=0.0, ignore_eos=True))[0]
    assert (len(out.outputs[0].token_ids), out.outputs[0].finish_reason) == (5, "length")


def test_logprobs_with_top_alternatives(llama_checkpoint):
    folder, _ = llama_checkpoint
    engine = make_engine(folder)
    out = engine.generate([random_prompt(8, seed=90)], SamplingParams(temperature=0.0, max_tokens=5, logprobs=3))
    choice = out[0].outputs[0]
    assert len(choice.logprobs) == 5
    for token_id, entry in zip(choice.token_ids, choice.logprobs):
        assert entry.token_id == token_id
        assert len(entry.top) == 3 and entry.top[0][0] == token_id  # greedy picks the top one
        assert entry.logprob == pytest.approx(entry.top[0][1]) and entry.logprob <= 0


def test_abort_frees_blocks_at_once(llama_checkpoint):
    folder, _ = llama_checkpoint
    engine = make_engine(folder)
    engine.add_request("a", random_prompt(20, seed=100), SamplingParams(max_tokens=50))
    engine.add_request("b", random_prompt(20, seed=101), SamplingParams(max_tokens=50))
    engine.step()
    used = engine.kv.num_used_blocks
    final = engine.abort_request("a")
    assert final.finished and [c.finish_reason for c in final.outputs] == ["abort"]
    assert engine.kv.num_used_blocks < used
    assert engine.abort_request("a") is None
    assert engine.stats()["requests"] == 1


def test_request_validation(llama_checkpoint):
    folder, _ = llama_checkpoint
    engine = make_engine(folder, max_model_len=32, max_num_seqs=1, max_waiting_requests=1)
    with pytest.raises(PromptTooLongError, match="max_model_len is 32"):
        engine.add_request("long", list(range(3, 35)))
    with pytest.raises(EngineRequestError, match="empty"):
        engine.add_request("empty", [])
    with pytest.raises(EngineRequestError, match=r"\[0, 256\)"):
        engine.add_request("oov", [5, 999])
    engine.add_request("one", [5, 6])
    with pytest.raises(EngineRequestError, match="already in flight"):
        engine.add_request("one", [5, 6])
    engine.add_request("two", [5, 6])
    with pytest.raises(EngineOverloadedError):
        engine.add_request("three", [5, 6])


def test_bfloat16_engine_generates(llama_checkpoint):
    folder, _ = llama_checkpoint
    engine = make_engine(folder, dtype="bfloat16")
    assert engine.runner.kv_cache.dtype is __import__("torch").bfloat16
    out = engine.generate([random_prompt(12, seed=110)], SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True))
    assert len(out[0].outputs[0].token_ids) == 8


def test_min_tokens_holds_off_stop_tokens_and_stop_strings(llama_checkpoint):
    folder, _ = llama_checkpoint
    engine = make_engine(folder)
    prompt = random_prompt(10, seed=75)
    free = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True))[0].outputs[0]
    stop_id = free.token_ids[1]
    held = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True,
                                                    stop_token_ids=[stop_id], min_tokens=6))[0].outputs[0]
    assert len(held.token_ids) >= 6 and stop_id not in held.token_ids[:6]
    if stop_id in held.token_ids:  # after min_tokens the stop token ends it again
        assert held.token_ids[-1] == stop_id and (held.finish_reason, held.stop_reason) == ("stop", stop_id)
    # Stop strings are looked for only once min_tokens are out; greedy tokens are unchanged.
    stop = free.text[1:3]
    late = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True, stop=[stop],
                                                    min_tokens=8))[0].outputs[0]
    assert late.token_ids[:8] == free.token_ids[:8]
    assert late.text.startswith(free.text[: len(engine.tokenizer.decode(free.token_ids[:8]))])
    assert engine.kv.num_used_blocks == 0


def test_the_cpu_attention_kernels_serve_by_default_and_can_be_turned_off(llama_checkpoint):
    folder, model = llama_checkpoint
    on, off = make_engine(folder), make_engine(folder, cpu_attention_kernel=False)
    assert on.runner.attention_kernel is not None and off.runner.attention_kernel is None
    prompts = [random_prompt(n, seed=200 + n) for n in (5, 40, 90)]
    params = SamplingParams(temperature=0.0, max_tokens=20)
    with_kernel = [o.outputs[0].token_ids for o in on.generate(prompts, params)]
    assert with_kernel == [o.outputs[0].token_ids for o in off.generate(prompts, params)]
    assert with_kernel == [hf_greedy(model, p, 20) for p in prompts]
