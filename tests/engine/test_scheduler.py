"""The scheduler over a real KV cache manager, with steps applied by hand (no model)."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from slipway.engine.kv import KVCacheManager
from slipway.engine.lora.adapter import LoraAdapterError
from slipway.engine.sampling_params import SamplingParams
from slipway.engine.scheduler import MAX_LONG_PREFILL_DEFERRALS, Scheduler, SchedulerOutput
from slipway.engine.sequence import Sequence, SequenceStatus

BS = 4


def make(num_blocks=64, max_num_seqs=8, budget=16, chunked=True, caching=False, short=0) -> Scheduler:
    kv = KVCacheManager(num_blocks, BS, enable_prefix_caching=caching)
    return Scheduler(kv, max_num_seqs=max_num_seqs, max_num_batched_tokens=budget, enable_chunked_prefill=chunked,
                     short_prefill_tokens=short)


def seq(seq_id: int, prompt_len: int, arrival: int | None = None) -> Sequence:
    prompt = [seq_id * 100 + i for i in range(prompt_len)]
    return Sequence(seq_id, f"r{seq_id}", 0, prompt, SamplingParams(), arrival if arrival is not None else seq_id)


def apply(out: SchedulerOutput) -> None:
    """What the engine does after the forward: count computed tokens, append a sampled one."""
    for item in out.scheduled:
        completes = item.completes_prompt
        item.seq.num_computed_tokens += item.num_new_tokens - item.num_draft_tokens
        item.seq.spec_token_ids = []
        if completes:
            item.seq.token_ids.append(7)


def plan(out: SchedulerOutput) -> list[tuple[int, int]]:
    return [(item.seq.seq_id, item.num_new_tokens) for item in out.scheduled]


def test_budget_splits_long_prompts_into_chunks_and_decodes_go_first():
    s = make(budget=10)
    s.add(seq(1, 4))
    s.add(seq(2, 15))
    first = s.schedule()
    assert plan(first) == [(1, 4), (2, 6)]
    apply(first)
    second = s.schedule()
    assert plan(second) == [(1, 1), (2, 9)], "the decode comes first, the chunk takes the rest"
    assert second.num_batched_tokens == 10
    apply(second)
    assert plan(s.schedule()) == [(1, 1), (2, 1)]


def test_no_chunking_waits_for_room():
    s = make(budget=10, chunked=False)
    s.add(seq(1, 4))
    s.add(seq(2, 8))
    assert plan(s.schedule()) == [(1, 4)]


def test_fifo_no_overtaking_when_the_oldest_does_not_fit():
    s = make(num_blocks=6)
    s.add(seq(1, 12))  # 3 blocks
    apply(s.schedule())
    s.add(seq(2, 16))  # 4 blocks: does not fit beside seq 1
    s.add(seq(3, 2))   # would fit, but must not pass seq 2
    assert plan(s.schedule()) == [(1, 1)]
    assert [w.seq_id for w in s.waiting] == [2, 3]


def test_max_num_seqs_caps_the_batch():
    s = make(max_num_seqs=2)
    for i in (1, 2, 3):
        s.add(seq(i, 2))
    assert [i for i, _ in plan(s.schedule())] == [1, 2]
    assert len(s.waiting) == 1


def test_preemption_takes_the_newest_and_requeues_it_in_arrival_order():
    s = make(num_blocks=4, budget=32)
    s.add(seq(1, 8))   # 2 blocks
    s.add(seq(2, 8))   # 2 blocks
    apply(s.schedule())
    s.add(seq(3, 1))
    # Each now has 9 tokens: computing the 9th needs a third block for both.
    out = s.schedule()
    assert [p.seq_id for p in out.preempted] == [2]
    assert plan(out) == [(1, 1)], "nothing new is admitted in a step that preempted"
    victim = out.preempted[0]
    assert victim.status is SequenceStatus.WAITING and victim.num_computed_tokens == 0
    assert [w.seq_id for w in s.waiting] == [2, 3], "the preempted request keeps its place"
    assert s.counters.num_preemptions == 1
    assert not s.kv.has(2)


def test_a_lone_sequence_that_cannot_grow_preempts_itself():
    s = make(num_blocks=2, budget=32)
    s.add(seq(1, 8))
    apply(s.schedule())
    out = s.schedule()
    assert [p.seq_id for p in out.preempted] == [1] and out.scheduled == []


def test_drafts_are_trimmed_to_the_budget():
    s = make(budget=3)
    s.add(seq(1, 2))
    apply(s.schedule())
    running = s.running[0]
    running.spec_token_ids = [5, 6, 7, 8]
    out = s.schedule()
    assert plan(out) == [(1, 3)]
    assert out.scheduled[0].num_draft_tokens == 2 and running.spec_token_ids == [5, 6]


def test_a_short_prompt_goes_before_a_long_older_one():
    s = make(budget=16, short=6)
    s.add(seq(1, 20))
    s.add(seq(2, 3))
    first = s.schedule()
    assert plan(first) == [(2, 3)], "the long prompt sits out while the short one prefills"
    apply(first)
    second = s.schedule()
    assert plan(second) == [(2, 1), (1, 6)], "then it prefills at most the threshold beside the decode"
    apply(second)
    apply(s.schedule())
    apply(s.schedule())
    assert plan(s.schedule()) == [(1, 2), (2, 1)], "20 = 6 + 6 + 6 + 2"


def test_a_cached_prefix_makes_a_long_prompt_short():
    s = make(budget=32, short=6, caching=True)
    shared = [9] * 16
    first = Sequence(1, "r1", 0, shared + [1, 2], SamplingParams(), 1)
    s.add(first)
    apply(s.schedule())  # 18 tokens in one step: 4 full blocks cached
    s.kv.cache_full_blocks(first.seq_id, first.token_ids, first.num_computed_tokens)
    s.add(seq(2, 20))
    s.add(Sequence(3, "r3", 0, shared + [3, 4, 5], SamplingParams(), 3))
    out = s.schedule()
    assert plan(out) == [(1, 1), (3, 3)], "19 tokens, 16 cached: short, it passes the 20-token prompt"


def test_a_long_prompt_sits_out_a_bounded_number_of_steps():
    s = make(budget=16, short=6, max_num_seqs=16)
    s.add(seq(1, 30))
    steps_out = 0
    for arrival in range(2, 12):  # a new short prompt every step
        s.add(seq(arrival, 2))
        out = s.schedule()
        if 1 not in [seq_id for seq_id, _ in plan(out)]:
            steps_out += 1
        else:
            assert steps_out == MAX_LONG_PREFILL_DEFERRALS, "it ran only after the most deferrals allowed"
            break
        apply(out)
    else:
        raise AssertionError("the long prompt never ran")


def test_a_long_prompt_alone_takes_the_whole_budget():
    s = make(budget=16, short=6)
    s.add(seq(1, 40))
    first = s.schedule()
    assert plan(first) == [(1, 16)]
    apply(first)
    s.add(seq(2, 30))
    assert plan(s.schedule()) == [(1, 6), (2, 6)], "two long prompts share a step, each up to the threshold"


def test_without_the_threshold_a_long_prompt_takes_the_whole_step():
    s = make(budget=16)
    s.add(seq(1, 20))
    s.add(seq(2, 3))
    assert plan(s.schedule()) == [(1, 16)]


def test_the_threshold_never_cuts_a_decode_or_its_drafts():
    s = make(budget=16, short=2)
    running = seq(1, 2)
    s.add(running)
    apply(s.schedule())
    s.add(seq(2, 9))
    running.spec_token_ids = [5, 6, 7, 8]
    out = s.schedule()
    assert plan(out) == [(1, 5), (2, 2)] and out.scheduled[0].num_draft_tokens == 4


def test_the_threshold_is_ignored_without_chunked_prefill():
    s = make(budget=16, chunked=False, short=4)
    s.add(seq(1, 12))
    assert plan(s.schedule()) == [(1, 12)]


def test_prefix_hits_skip_cached_tokens_and_are_counted():
    s = make(caching=True)
    first = seq(1, 9)
    s.add(first)
    out = s.schedule()
    apply(out)
    s.kv.cache_full_blocks(first.seq_id, first.token_ids, first.num_computed_tokens)
    twin = Sequence(2, "r2", 0, first.token_ids[:9], SamplingParams(), arrival=2)
    s.add(twin)
    assert plan(s.schedule())[-1] == (2, 1)
    assert twin.num_cached_tokens == 8
    assert (s.counters.prefix_queried_tokens, s.counters.prefix_hit_tokens) == (18, 8)


def test_finish_frees_blocks():
    s = make()
    one = seq(1, 5)
    s.add(one)
    apply(s.schedule())
    s.finish(one)
    assert s.kv.num_used_blocks == 0 and not s.has_unfinished()


@settings(max_examples=150, deadline=None)
@given(prompt_lens=st.lists(st.integers(1, 60), min_size=1, max_size=8),
       arrivals=st.lists(st.integers(0, 6), min_size=8, max_size=8),
       budget=st.integers(4, 40), short=st.integers(0, 12), shared=st.sampled_from([0, 8, 24]))
def test_every_prompt_finishes_and_no_long_one_sits_out_too_long(prompt_lens, arrivals, budget, short, shared):
    """Random arrivals of prompts sharing a cached prefix of `shared` tokens, each finishing after two outputs."""
    s = make(num_blocks=256, max_num_seqs=4, budget=budget, short=short, caching=True)
    pending = [(arrivals[i], Sequence(i + 1, f"r{i + 1}", 0, [5] * shared + [i * 100 + j for j in range(n)],
                                      SamplingParams(), i + 1)) for i, n in enumerate(prompt_lens)]
    for step in range(2000):
        for arrival, new in [p for p in pending if p[0] == step]:
            s.add(new)
        out = s.schedule()
        assert out.num_batched_tokens <= budget
        assert all(queued.long_prefill_deferrals <= MAX_LONG_PREFILL_DEFERRALS for queued in s.running + s.waiting)
        if s.running or s.waiting:
            assert out.scheduled, "a step with work to do schedules something"
        apply(out)
        for item in out.scheduled:
            s.kv.cache_full_blocks(item.seq.seq_id, item.seq.token_ids, item.seq.num_computed_tokens)
        for running in list(s.running):
            if running.num_output_tokens >= 2:
                s.finish(running)
        if not s.has_unfinished() and step >= max(arrivals):
            break
    assert not s.has_unfinished(), "every prompt was prefilled and finished"


def test_an_adapter_that_fails_to_load_is_reported_even_when_the_short_prompt_cannot_start():
    class Table:
        def acquire(self, adapter):
            raise LoraAdapterError("the adapter's folder is gone")

        def release(self, adapter):
            pass

    kv = KVCacheManager(64, BS, enable_prefix_caching=False)
    s = Scheduler(kv, max_num_seqs=8, max_num_batched_tokens=16, short_prefill_tokens=6, loras=Table())
    long_prompt = seq(1, 30)
    broken = Sequence(2, "r2", 0, [5, 6], SamplingParams(), 2, lora=SimpleNamespace(root_hash=77))
    s.add(long_prompt)
    s.add(broken)
    out = s.schedule()
    assert [failed.seq_id for failed, _ in out.failed] == [2], "the failure reaches the engine"
    assert plan(out) == [(1, 6)], "and the long prompt does not sit out for a short one that never starts"
