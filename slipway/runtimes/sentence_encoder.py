"""A sentence-transformers folder run with plain transformers + torch, offline.

The folder's `modules.json` says what the pipeline is; the layouts this module runs:

    Transformer ──► Pooling (mean | cls | max | mean_sqrt_len) ──► [Normalize]

`1_Pooling/config.json` picks the pooling mode, `sentence_bert_config.json` the truncation
length. A plain Hugging Face folder without `modules.json` gets mean pooling and no
normalisation, as sentence-transformers itself would do. Anything else in the pipeline (Dense
layers, custom modules) is refused at load with the module named, rather than silently
producing different vectors.

Blocking: `SentenceEncoder.load` and `encode` run on the caller's thread; the runtime calls them
from a worker thread.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from slipway.errors import RuntimeLoadError

PoolingMode = Literal["mean", "cls", "max", "mean_sqrt_len"]

_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"
_POOLING_FLAGS: dict[str, PoolingMode] = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}


@dataclass(frozen=True)
class EncoderLayout:
    """What a sentence-transformers folder asks for, read from its JSON files."""

    transformer_dir: Path
    pooling: PoolingMode
    normalize: bool
    max_seq_length: int | None


def read_layout(folder: Path) -> EncoderLayout:
    """Read `modules.json` and friends; raise `RuntimeLoadError` for a pipeline this cannot run."""
    folder = Path(folder)
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return EncoderLayout(folder, "mean", False, _max_seq_length(folder))
    modules = json.loads(modules_file.read_text())
    transformer_dir, pooling, normalize = folder, "mean", False
    for module in modules:
        kind, path = module.get("type", ""), folder / module.get("path", "")
        if kind == _TRANSFORMER:
            transformer_dir = path
        elif kind == _POOLING:
            pooling = _pooling_mode(path / "config.json")
        elif kind == _NORMALIZE:
            normalize = True
        else:
            raise RuntimeLoadError(
                f"{modules_file}: module {kind!r} is not supported by the embedding runtime "
                "(it runs Transformer -> Pooling -> Normalize); use a model without it, or serve it "
                "as a kind 'custom' package"
            )
    return EncoderLayout(transformer_dir, pooling, normalize, _max_seq_length(transformer_dir))


def _pooling_mode(config_file: Path) -> PoolingMode:
    config = json.loads(config_file.read_text()) if config_file.is_file() else {"pooling_mode_mean_tokens": True}
    chosen = [mode for flag, mode in _POOLING_FLAGS.items() if config.get(flag)]
    unsupported = [k for k, v in config.items() if k.startswith("pooling_mode_") and v and k not in _POOLING_FLAGS]
    if len(chosen) != 1 or unsupported:
        raise RuntimeLoadError(
            f"{config_file}: pooling {sorted(k for k, v in config.items() if k.startswith('pooling_mode_') and v)} "
            "is not supported; exactly one of mean, cls, max or mean_sqrt_len tokens is"
        )
    return chosen[0]


def _max_seq_length(folder: Path) -> int | None:
    config_file = folder / "sentence_bert_config.json"
    if config_file.is_file():
        value = json.loads(config_file.read_text()).get("max_seq_length")
        return int(value) if value else None
    return None


class SentenceEncoder:
    """Tokenizer + transformer + pooling, returning float32 vectors and real token counts."""

    def __init__(self, layout: EncoderLayout, tokenizer, model, max_length: int) -> None:
        self.layout = layout
        self.tokenizer = tokenizer
        self.model = model
        self.max_length = max_length
        self.dimension = int(model.config.hidden_size)

    @classmethod
    def load(cls, folder: Path, *, threads: int | None = None) -> "SentenceEncoder":
        # No hub access ever: the weights are on disk or loading fails.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        # Progress bars would fill the replica's log file with carriage returns.
        transformers_logging.disable_progress_bar()
        if threads:
            torch.set_num_threads(threads)
        layout = read_layout(folder)
        tokenizer = AutoTokenizer.from_pretrained(str(layout.transformer_dir), local_files_only=True)
        model = AutoModel.from_pretrained(str(layout.transformer_dir), local_files_only=True)
        model.eval()
        limits = [n for n in (layout.max_seq_length, getattr(model.config, "max_position_embeddings", None),
                              getattr(tokenizer, "model_max_length", None)) if n and n < 1_000_000]
        return cls(layout, tokenizer, model, min(limits) if limits else 512)

    def encode(self, texts: list[str]):
        """(float32 tensor [len(texts), dimension], tokens each text used after truncation)."""
        import torch

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"]
            vectors = _pool(hidden, mask, self.layout.pooling)
            if self.layout.normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return vectors.float().contiguous(), mask.sum(dim=1).tolist()


def _pool(hidden, mask, mode: PoolingMode):
    import torch

    if mode == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    summed = (hidden * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp(min=1e-9)
    return summed / (counts.sqrt() if mode == "mean_sqrt_len" else counts)
