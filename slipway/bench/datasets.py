"""The requests a run sends: prompts and output lengths, built from a dataset name and a seed.

    random       num_prompts prompts of input_len tokens (+- range_ratio), after an optional
                 prefix of prefix_len tokens that every prompt shares.
    multi-turn   num_conversations chats of num_turns turns; turn k sends turns 1..k-1 (user and
                 a synthetic assistant reply of output_len tokens) again as its prefix, after an
                 optional shared system prompt. Turn k waits for turn k-1 of its chat to finish.
    trace        lengths of each trace row, shrunk to fit max_total_len. Mooncake rows build
                 their prompt block by block from hash_ids, so equal ids give equal text; each
                 512-token block becomes trace_block_size tokens.

Requests are in dispatch order: multi-turn chats are interleaved turn by turn, like users who
each wait for an answer before writing again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from slipway.bench.config import BenchConfig
from slipway.bench.text import TextMaker
from slipway.bench.traces import MOONCAKE_BLOCK_TOKENS, TraceRow


@dataclass
class BenchRequest:
    """One request to send."""

    index: int
    messages: list[dict[str, str]]
    """Chat messages; the completions endpoint sends their contents joined as one prompt."""
    input_tokens: int
    """Prompt tokens intended (exact with a tokenizer, approximate without; chat templates add some)."""
    output_tokens: int
    """max_tokens sent; with ignore_eos the server generates exactly this many."""
    after: int | None = None
    """Index of a request that must finish before this one is sent (the previous turn of a chat)."""
    conversation: int | None = None
    turn: int | None = None

    @property
    def prompt(self) -> str:
        """The completions endpoint's prompt: the messages' contents, one paragraph each."""
        return "\n\n".join(message["content"] for message in self.messages)


def build_requests(config: BenchConfig, text: TextMaker, trace: list[TraceRow] | None = None,
                   count: int | None = None) -> list[BenchRequest]:
    """The requests of `config.dataset`: `count` of them for random (default num_prompts), every
    row of `trace` for the trace dataset, num_conversations * num_turns for multi-turn."""
    if config.dataset == "random":
        return random_requests(config, text, count or config.num_prompts)
    if config.dataset == "multi-turn":
        return multi_turn_requests(config, text)
    assert trace is not None, "the trace dataset needs trace rows (BenchConfig checks --trace is set)"
    return trace_requests(config, text, trace)


def random_requests(config: BenchConfig, text: TextMaker, count: int) -> list[BenchRequest]:
    rng = random.Random(f"lengths-{config.seed}")
    prefix = text.pieces(f"prefix-{config.seed}", config.prefix_len)
    requests = []
    for index in range(count):
        input_len = _draw(rng, config.input_len, config.range_ratio)
        output_len = _draw(rng, config.output_len, config.range_ratio)
        body = text.pieces(f"random-{config.seed}-{index}", input_len)
        requests.append(BenchRequest(
            index=index,
            messages=[{"role": "user", "content": text.render(prefix + body)}],
            input_tokens=len(prefix) + input_len,
            output_tokens=output_len,
        ))
    return requests


def multi_turn_requests(config: BenchConfig, text: TextMaker) -> list[BenchRequest]:
    rng = random.Random(f"lengths-{config.seed}")
    system = ([{"role": "system", "content": text.text(f"system-{config.seed}", config.prefix_len)}]
              if config.prefix_len else [])
    histories = [list(system) for _ in range(config.num_conversations)]
    history_tokens = [config.prefix_len] * config.num_conversations
    last_index: list[int | None] = [None] * config.num_conversations
    requests: list[BenchRequest] = []
    for turn in range(config.num_turns):
        for chat in range(config.num_conversations):
            input_len = _draw(rng, config.input_len, config.range_ratio)
            output_len = _draw(rng, config.output_len, config.range_ratio)
            user = {"role": "user", "content": text.text(f"chat-{config.seed}-{chat}-user-{turn}", input_len)}
            request = BenchRequest(
                index=len(requests),
                messages=[*histories[chat], user],
                input_tokens=history_tokens[chat] + input_len,
                output_tokens=output_len,
                after=last_index[chat],
                conversation=chat,
                turn=turn,
            )
            requests.append(request)
            # The next turn resends this one with a reply of the length asked for, so every turn
            # of a chat is a prefix of the next whatever the server actually answered.
            reply = {"role": "assistant", "content": text.text(f"chat-{config.seed}-{chat}-assistant-{turn}", output_len)}
            histories[chat] += [user, reply]
            history_tokens[chat] += input_len + output_len
            last_index[chat] = request.index
    return requests


def trace_requests(config: BenchConfig, text: TextMaker, trace: list[TraceRow]) -> list[BenchRequest]:
    requests = []
    for index, row in enumerate(trace):
        if row.hash_ids:
            pieces = _block_pieces(text, row, config.trace_block_size)
            input_len, output_len = scale_lengths(len(pieces), row.output_tokens, config.max_total_len)
            # Cutting from the end keeps the leading blocks, the ones other requests share.
            content = text.render(pieces[:input_len])
        else:
            input_len, output_len = scale_lengths(row.input_tokens, row.output_tokens, config.max_total_len)
            content = text.text(f"trace-{config.seed}-{index}", input_len)
        requests.append(BenchRequest(
            index=index,
            messages=[{"role": "user", "content": content}],
            input_tokens=input_len,
            output_tokens=output_len,
        ))
    return requests


def scale_lengths(input_tokens: int, output_tokens: int, max_total_len: int | None) -> tuple[int, int]:
    """(input, output) shrunk by one factor so they sum to at most `max_total_len`, each at least 1.

    Both shrink by the same factor, so a trace keeps its ratio of prompt to output and the shape
    of its length distribution; lengths that already fit are left as they are.
    """
    input_tokens, output_tokens = max(1, input_tokens), max(1, output_tokens)
    total = input_tokens + output_tokens
    if max_total_len is None or total <= max_total_len:
        return input_tokens, output_tokens
    factor = max_total_len / total
    output_scaled = max(1, int(output_tokens * factor))
    input_scaled = max(1, min(max_total_len - output_scaled, int(input_tokens * factor)))
    return input_scaled, output_scaled


def _block_pieces(text: TextMaker, row: TraceRow, block_size: int) -> list:
    """The prompt of a Mooncake row: one block of `block_size` tokens per hash id, cut to the row's
    input length scaled by block_size / 512 (the last block of a row is usually partial)."""
    pieces: list = []
    for hash_id in row.hash_ids:
        pieces += text.pieces(f"block-{hash_id}-{block_size}", block_size)
    scaled_input = max(1, round(row.input_tokens * block_size / MOONCAKE_BLOCK_TOKENS))
    return pieces[:scaled_input]


def _draw(rng: random.Random, length: int, range_ratio: float) -> int:
    if range_ratio == 0:
        return length
    return rng.randint(max(1, int(length * (1 - range_ratio))), max(1, int(length * (1 + range_ratio))))
