"""A run's report: its config, summary and per-request records; as JSON and as Rich tables.

The JSON file (`--out FILE.json`) is `BenchReport.model_dump_json()`:

    {"config": {...BenchConfig, no api_key...}, "model": "...", "started_at": "...",
     "summary": {...BenchSummary...}, "records": [{...RequestRecord...}, ...]}
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from slipway.bench.config import BenchConfig
from slipway.bench.metrics import BenchSummary, Distribution
from slipway.bench.record import RequestRecord
from slipway.errors import SpecError


class BenchReport(BaseModel):
    """Everything one run produced."""

    config: BenchConfig
    model: str = Field(description="The model the requests named (config.model, or the server's first).")
    started_at: datetime
    summary: BenchSummary
    records: list[RequestRecord]

    def write_json(self, path: Path) -> Path:
        """Write the report to `path` (parent folders created) and return it."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.model_dump_json(indent=2))
        except OSError as exc:
            raise SpecError(f"--out {path}: could not write the report ({exc.strerror}); pick a writable path") from None
        return path


def render_report(report: BenchReport, console: Console) -> None:
    """Print the summary table, the latency table and, if any failed, the most frequent errors."""
    console.print(summary_table(report))
    console.print(latency_table(report.summary))
    if report.summary.errors:
        console.print(error_table(report.summary))


def summary_table(report: BenchReport) -> Table:
    s = report.summary
    table = Table(title="Benchmark result", show_header=False, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    table.add_row("Target", report.config.url)
    table.add_row("Model", report.model)
    table.add_row("Successful requests", str(s.completed))
    table.add_row("Failed requests", f"[red]{s.failed}[/]" if s.failed else "0")
    table.add_row("Duration (s)", f"{s.duration_s:.2f}")
    table.add_row("Max concurrency seen", str(s.max_concurrency_seen))
    table.add_row("Total input tokens", str(s.total_input_tokens))
    table.add_row("Total output tokens", str(s.total_output_tokens))
    table.add_row("Request throughput (req/s)", f"{s.request_throughput:.2f}")
    if s.goodput is not None:
        slos = " ".join(f"{metric}<={limit:g}ms" for metric, limit in s.goodput_slos_ms.items())
        table.add_row(f"Goodput (req/s, {slos})", f"{s.goodput:.2f}")
    table.add_row("Output token throughput (tok/s)", f"{s.output_throughput:.2f}")
    table.add_row("Total token throughput (tok/s)", f"{s.total_token_throughput:.2f}")
    return table


def latency_table(summary: BenchSummary) -> Table:
    table = Table(title="Latency (ms)", title_justify="left")
    for column in ("metric", "mean", "p50", "p90", "p99", "max", "n"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    rows: list[tuple[str, Distribution | None]] = [
        ("TTFT", summary.ttft_ms), ("TPOT", summary.tpot_ms), ("ITL", summary.itl_ms), ("E2E latency", summary.e2el_ms),
    ]
    for name, dist in rows:
        if dist is None:
            table.add_row(name, *["-"] * 6)
        else:
            table.add_row(name, *(f"{v:.2f}" for v in (dist.mean, dist.p50, dist.p90, dist.p99, dist.max)), str(dist.count))
    return table


def error_table(summary: BenchSummary) -> Table:
    table = Table(title="Errors (most frequent)", title_justify="left")
    table.add_column("count", justify="right")
    table.add_column("error", style="red")
    for sample in summary.errors:
        table.add_row(str(sample.count), sample.message)
    return table
