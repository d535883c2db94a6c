"""Azure CSV and Mooncake JSONL traces: small files written here, and the real ones when present."""

from __future__ import annotations

import pytest

from slipway.bench.traces import MOONCAKE_BLOCK_TOKENS, TraceRow, load_trace
from slipway.errors import NotFoundError, SpecError

from .conftest import AZURE_CONV, MOONCAKE

AZURE_TEXT = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:51.0000000,10,1
"""

MOONCAKE_TEXT = """{"timestamp": 0, "input_length": 1000, "output_length": 50, "hash_ids": [0, 1]}
{"timestamp": 1500, "input_length": 1100, "output_length": 60, "hash_ids": [0, 1, 2]}

{"timestamp": 2000, "input_length": 20, "output_length": 5, "hash_ids": [9]}
"""


def test_azure_rows_count_seconds_from_the_first(tmp_path):
    path = tmp_path / "azure.csv"
    path.write_text(AZURE_TEXT)
    rows = load_trace(path, max_requests=100)

    assert [(r.input_tokens, r.output_tokens, r.hash_ids) for r in rows] == [(374, 44, ()), (396, 109, ()), (10, 1, ())]
    assert rows[0].arrival_s == 0.0
    assert rows[1].arrival_s == pytest.approx(4.314579)
    assert rows[2].arrival_s == pytest.approx(4.3194100)


def test_mooncake_rows_keep_hash_ids_and_ms_become_seconds(tmp_path):
    path = tmp_path / "mc.jsonl"
    path.write_text(MOONCAKE_TEXT)
    rows = load_trace(path, max_requests=100)

    assert rows == [TraceRow(0.0, 1000, 50, (0, 1)), TraceRow(1.5, 1100, 60, (0, 1, 2)), TraceRow(2.0, 20, 5, (9,))]


def test_only_the_first_max_requests_are_read(tmp_path):
    path = tmp_path / "mc.jsonl"
    path.write_text(MOONCAKE_TEXT)
    assert len(load_trace(path, max_requests=2)) == 2


def test_format_is_sniffed_when_the_suffix_says_neither(tmp_path):
    path = tmp_path / "trace.txt"
    path.write_text(MOONCAKE_TEXT)
    assert load_trace(path, max_requests=5)[1].hash_ids == (0, 1, 2)


def test_rows_out_of_order_are_sorted_and_rebased(tmp_path):
    path = tmp_path / "mc.jsonl"
    path.write_text('{"timestamp": 500, "input_length": 1, "output_length": 1}\n'
                    '{"timestamp": 200, "input_length": 2, "output_length": 2}\n')
    rows = load_trace(path, max_requests=5)
    assert [(r.arrival_s, r.input_tokens) for r in rows] == [(0.0, 2), (0.3, 1)]


@pytest.mark.parametrize("name, text, message", [
    ("bad.csv", "a,b,c\n1,2,3\n", "is not the Azure trace's"),
    ("bad.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2\n", r"bad.csv:2: .* is not"),
    ("bad.jsonl", '{"timestamp": 0}\n', r"bad.jsonl:1: not a Mooncake row"),
    ("empty.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n", "has no requests"),
])
def test_malformed_traces_say_where_and_what(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecError, match=message):
        load_trace(path, max_requests=10)


def test_a_missing_trace_points_at_the_shared_traces(tmp_path):
    with pytest.raises(NotFoundError, match="shared/data/traces"):
        load_trace(tmp_path / "nope.csv", max_requests=10)


def test_real_azure_conversation_trace():
    if not AZURE_CONV.is_file():
        pytest.skip(f"the Azure conversation trace is not at {AZURE_CONV}")
    rows = load_trace(AZURE_CONV, max_requests=100_000)

    assert len(rows) == 19_366
    assert rows[0] == TraceRow(0.0, 374, 44)
    mean_context = sum(r.input_tokens for r in rows) / len(rows)
    assert mean_context == pytest.approx(1155, rel=0.01)  # the trace README's figure
    assert 3000 < rows[-1].arrival_s < 3700, "about an hour of requests"


def test_real_mooncake_conversation_trace():
    if not MOONCAKE.is_file():
        pytest.skip(f"the Mooncake conversation trace is not at {MOONCAKE}")
    rows = load_trace(MOONCAKE, max_requests=500)

    assert len(rows) == 500
    assert rows[0] == TraceRow(0.0, 6758, 500, tuple(range(14)))
    for row in rows:
        assert len(row.hash_ids) == -(-row.input_tokens // MOONCAKE_BLOCK_TOKENS), "one id per 512-token block"
    assert all(b.arrival_s >= a.arrival_s for a, b in zip(rows, rows[1:]))
