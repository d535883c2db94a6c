"""Datasets: random with a shared prefix, multi-turn chats, trace-shaped lengths and blocks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from slipway.bench.config import BenchConfig
from slipway.bench.datasets import build_requests, scale_lengths
from slipway.bench.text import TextMaker
from slipway.bench.traces import TraceRow

TEXT = TextMaker()


def _words(request) -> list[str]:
    return request.prompt.split()


def test_random_requests_have_the_lengths_asked_for():
    requests = build_requests(BenchConfig(num_prompts=5, input_len=30, output_len=7), TEXT)

    assert [r.index for r in requests] == [0, 1, 2, 3, 4]
    assert all(len(_words(r)) == r.input_tokens == 30 and r.output_tokens == 7 for r in requests)
    assert len({r.prompt for r in requests}) == 5, "prompts differ"


def test_random_prefix_is_shared_by_every_prompt():
    requests = build_requests(BenchConfig(num_prompts=4, input_len=10, prefix_len=20), TEXT)
    prefixes = {" ".join(_words(r)[:20]) for r in requests}

    assert len(prefixes) == 1
    assert all(r.input_tokens == 30 and len(_words(r)) == 30 for r in requests)
    assert len({" ".join(_words(r)[20:]) for r in requests}) == 4


def test_range_ratio_spreads_lengths_within_bounds():
    requests = build_requests(BenchConfig(num_prompts=200, input_len=100, output_len=50, range_ratio=0.5), TEXT)
    inputs = [r.input_tokens for r in requests]
    outputs = [r.output_tokens for r in requests]

    assert min(inputs) >= 50 and max(inputs) <= 150 and len(set(inputs)) > 20
    assert min(outputs) >= 25 and max(outputs) <= 75
    assert [len(_words(r)) for r in requests] == inputs


def test_equal_seeds_give_equal_datasets():
    config = BenchConfig(num_prompts=3, range_ratio=0.3, seed=5)
    assert [r.prompt for r in build_requests(config, TEXT)] == [r.prompt for r in build_requests(config, TEXT)]


def test_multi_turn_chats_grow_and_share_their_prefixes():
    config = BenchConfig(dataset="multi-turn", num_conversations=2, num_turns=3, input_len=5, output_len=4,
                         prefix_len=6)
    requests = build_requests(config, TEXT)

    assert [(r.conversation, r.turn) for r in requests] == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]
    assert [r.after for r in requests] == [None, None, 0, 1, 2, 3]
    chat = [r for r in requests if r.conversation == 0]
    for earlier, later in zip(chat, chat[1:]):
        assert later.messages[: len(earlier.messages)] == earlier.messages
        assert later.messages[len(earlier.messages)]["role"] == "assistant"
        assert len(later.messages[len(earlier.messages)]["content"].split()) == 4
    assert [r.input_tokens for r in chat] == [6 + 5, 6 + 5 + 4 + 5, 6 + 2 * (5 + 4) + 5]
    assert requests[0].messages[0] == requests[1].messages[0], "one system prompt for all chats"
    assert requests[0].messages[0]["role"] == "system"
    assert requests[0].messages[1] != requests[1].messages[1]


def test_trace_lengths_fit_the_max_total_length():
    rows = [TraceRow(0.0, 3000, 1000), TraceRow(1.0, 100, 20)]
    requests = build_requests(BenchConfig(dataset="trace", trace="t.csv", max_total_len=2048), TEXT, rows)

    assert (requests[0].input_tokens, requests[0].output_tokens) == (1536, 512)
    assert (requests[1].input_tokens, requests[1].output_tokens) == (100, 20)
    assert len(_words(requests[0])) == 1536


def test_mooncake_blocks_with_equal_ids_give_equal_text_at_the_smaller_block_size():
    rows = [TraceRow(0.0, 1024, 10, (0, 1)), TraceRow(0.0, 1500, 10, (0, 1, 2)), TraceRow(0.0, 600, 10, (7, 1))]
    config = BenchConfig(dataset="trace", trace="t.jsonl", trace_block_size=16)
    first, second, third = (_words(r) for r in build_requests(config, TEXT, rows))

    assert len(first) == 32, "two 512-token blocks become two 16-token blocks"
    assert len(second) == round(1500 * 16 / 512) == 47, "the last block is partial"
    assert second[:32] == first
    assert third[:16] != first[:16], "a different first id, a different first block"
    assert third[16:19] == first[16:19], "equal ids give equal blocks wherever they appear"


def test_mooncake_prompts_cut_to_the_max_total_keep_the_leading_blocks():
    rows = [TraceRow(0.0, 4096, 100, tuple(range(8)))]
    config = BenchConfig(dataset="trace", trace="t.jsonl", trace_block_size=64, max_total_len=300)
    (request,) = build_requests(config, TEXT, rows)
    full = build_requests(config.model_copy(update={"max_total_len": None}), TEXT, rows)[0]

    assert request.input_tokens + request.output_tokens <= 300
    assert _words(full)[: request.input_tokens] == _words(request)


@given(st.integers(0, 100_000), st.integers(0, 100_000), st.integers(2, 10_000))
def test_scaled_lengths_fit_stay_positive_and_keep_their_order(input_tokens, output_tokens, max_total):
    scaled_in, scaled_out = scale_lengths(input_tokens, output_tokens, max_total)

    assert scaled_in >= 1 and scaled_out >= 1
    assert scaled_in + scaled_out <= max(max_total, max(1, input_tokens) + max(1, output_tokens))
    if max(1, input_tokens) + max(1, output_tokens) <= max_total:
        assert (scaled_in, scaled_out) == (max(1, input_tokens), max(1, output_tokens))
    else:
        assert scaled_in + scaled_out <= max_total
        if input_tokens >= 2 * output_tokens >= 2:
            assert scaled_in >= scaled_out, "a prompt-heavy request stays prompt-heavy"
