"""Measured rows, each engine's throughput against builtin's, the Markdown table and the JSON file.

A row is one engine at one concurrency. Its ratio to builtin compares output tokens/s at the same
concurrency over the same requests; a row that ran only the first N requests (transformers, one
at a time) is compared with builtin's single-stream run over those same N requests, as tokens
over the summed request times (a closed loop of one stream has no other time in it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slipway.bench.metrics import BenchSummary
from slipway.bench.record import RequestRecord

ENGINE_LABELS = {
    "builtin": "slipway builtin",
    "transformers": "HF transformers (bf16, 1 at a time)",
    "vllm": "vLLM CPU 0.32.0 (bf16)",
    "llamacpp": "llama.cpp (Q4_1 GGUF)",
}


@dataclass
class Row:
    """One engine measured at one concurrency."""

    engine: str
    concurrency: int
    summary: BenchSummary
    records: list[RequestRecord] = field(repr=False)
    startup_s: float | None = None

    @property
    def requests(self) -> int:
        return len(self.records)

    @property
    def full_length(self) -> int:
        """Requests that completed with exactly the output length asked for."""
        return sum(r.success and r.output_tokens == r.expected_output_tokens for r in self.records)

    def sequential_tokens_per_s(self, first: int) -> float:
        """Output tokens over summed request times of requests 0..first-1 (for one-stream runs)."""
        chosen = [r for r in self.records if r.index < first and r.success]
        busy_s = sum(r.e2el_ms for r in chosen) / 1000.0
        return sum(r.output_tokens for r in chosen) / busy_s if busy_s > 0 else 0.0


def ratio_to_builtin(row: Row, rows: list[Row]) -> float | None:
    """Row's output tok/s over builtin's at the same concurrency and requests; None without a match."""
    builtin = next((r for r in rows if r.engine == "builtin" and r.concurrency == row.concurrency), None)
    if builtin is None or builtin.summary.output_throughput <= 0:
        return None
    if row.requests == builtin.requests:
        return row.summary.output_throughput / builtin.summary.output_throughput
    if row.concurrency == 1 and row.requests < builtin.requests:
        reference = builtin.sequential_tokens_per_s(row.requests)
        return row.sequential_tokens_per_s(row.requests) / reference if reference > 0 else None
    return None


def flop_share(rows: list[Row], peak_flops_per_s: float, flops_per_token: float) -> dict[str, Any] | None:
    """What share of the matmul peak builtin's busiest measured row reaches (decode and all tokens)."""
    builtin = [r for r in rows if r.engine == "builtin" and r.summary.completed]
    if not builtin:
        return None
    top = max(builtin, key=lambda r: r.concurrency)
    output_flops = top.summary.output_throughput * flops_per_token
    all_flops = top.summary.total_token_throughput * flops_per_token
    return {
        "concurrency": top.concurrency,
        "output_tokens_per_s": top.summary.output_throughput,
        "output_gflops_per_s": output_flops / 1e9,
        "output_share_of_peak": output_flops / peak_flops_per_s,
        "prompt_and_output_tokens_per_s": top.summary.total_token_throughput,
        "prompt_and_output_share_of_peak": all_flops / peak_flops_per_s,
    }


def markdown_table(rows: list[Row]) -> str:
    """The rows as a Markdown table for docs/benchmarks.md."""
    lines = [
        "| engine | streams | requests | output tok/s | TTFT p50 ms | ITL p50 ms | vs builtin | full-length outputs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        summary = row.summary
        ratio = ratio_to_builtin(row, rows)
        lines.append(
            f"| {ENGINE_LABELS.get(row.engine, row.engine)} | {row.concurrency} | {row.requests} "
            f"| {summary.output_throughput:,.1f} | {_ms(summary.ttft_ms)} | {_ms(summary.itl_ms, 1)} "
            f"| {'-' if ratio is None else f'{ratio:.2f}x'} | {row.full_length}/{row.requests} |"
        )
    return "\n".join(lines)


def row_json(row: Row, rows: list[Row]) -> dict[str, Any]:
    ratio = ratio_to_builtin(row, rows)
    return {
        "engine": row.engine, "label": ENGINE_LABELS.get(row.engine, row.engine),
        "concurrency": row.concurrency, "requests": row.requests, "full_length_outputs": row.full_length,
        "output_tokens_per_s": row.summary.output_throughput,
        "ttft_p50_ms": row.summary.ttft_ms.p50 if row.summary.ttft_ms else None,
        "itl_p50_ms": row.summary.itl_ms.p50 if row.summary.itl_ms else None,
        "ratio_to_builtin": ratio, "server_startup_s": row.startup_s,
        "summary": row.summary.model_dump(mode="json"),
    }


def write_json(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def _ms(distribution, decimals: int = 0) -> str:
    return "-" if distribution is None else f"{distribution.p50:,.{decimals}f}"
