"""Post-training: datasets, and LoRA fine-tuning jobs that survive being killed.

    dataset_format   validate chat fine-tuning JSONL, every problem by line, stats
    datasets         canonical rows, content hash, deterministic split, atomic files, rows from traces
    job              a job's spec (job.json), hyperparameters, folder layout, events.jsonl, errors
    chat_tokens      chat rows to token ids, labels on assistant tokens only
    batches          padded batches and the loss per assistant token
    checkpoints      resumable checkpoint folders, written atomically, pruned
    lora             the LoRA SFT loop (imports torch, peft and transformers; not re-exported here)
    worker           `python -m slipway.train.worker --job-dir DIR`, the job process
"""

from slipway.train.dataset_format import (
    DatasetError, DatasetReport, DatasetStats, Problem, load_rows, validate_file, validate_lines, validate_text,
)
from slipway.train.datasets import (
    Split, SplitFiles, canonical_json, content_hash, rows_from_traces, split_rows, write_split,
)
from slipway.train.job import EventLog, Hyperparameters, JobDir, JobError, JobSpec, preflight, read_events

__all__ = [
    "DatasetError", "DatasetReport", "DatasetStats", "Problem", "load_rows", "validate_file",
    "validate_lines", "validate_text",
    "Split", "SplitFiles", "canonical_json", "content_hash", "rows_from_traces", "split_rows", "write_split",
    "EventLog", "Hyperparameters", "JobDir", "JobError", "JobSpec", "preflight", "read_events",
]
