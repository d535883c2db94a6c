"""Post-training: dataset format and files (this step); fine-tuning jobs and checkpoints build on it.

    dataset_format   validate chat fine-tuning JSONL, every problem by line, stats
    datasets         canonical rows, content hash, deterministic split, atomic files, rows from traces
"""

from slipway.train.dataset_format import (
    DatasetError, DatasetReport, DatasetStats, Problem, load_rows, validate_file, validate_lines, validate_text,
)
from slipway.train.datasets import (
    Split, SplitFiles, canonical_json, content_hash, rows_from_traces, split_rows, write_split,
)

__all__ = [
    "DatasetError", "DatasetReport", "DatasetStats", "Problem", "load_rows", "validate_file",
    "validate_lines", "validate_text",
    "Split", "SplitFiles", "canonical_json", "content_hash", "rows_from_traces", "split_rows", "write_split",
]
