"""Loading refuses incomplete or mismatched checkpoints with a message that says why."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from slipway.engine.errors import UnsupportedModelError
from slipway.engine.models import load_model


def copy_checkpoint(source, target, edit):
    shutil.copy(source / "config.json", target / "config.json")
    tensors = load_file(source / "model.safetensors")
    edit(tensors)
    save_file(tensors, target / "model.safetensors")


def test_missing_tensor_is_named(llama_checkpoint, tmp_path):
    copy_checkpoint(llama_checkpoint[0], tmp_path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(UnsupportedModelError, match="layers.1.mlp.gate_up_proj.weight"):
        load_model(tmp_path, dtype=torch.float32, device="cpu", max_positions=16)


def test_shape_mismatch_is_explained(llama_checkpoint, tmp_path):
    def shrink(tensors):
        tensors["model.norm.weight"] = tensors["model.norm.weight"][:10].clone()
    copy_checkpoint(llama_checkpoint[0], tmp_path, shrink)
    with pytest.raises(UnsupportedModelError, match="config.json and the weights disagree"):
        load_model(tmp_path, dtype=torch.float32, device="cpu", max_positions=16)


def test_no_safetensors(tmp_path, llama_checkpoint):
    shutil.copy(llama_checkpoint[0] / "config.json", tmp_path / "config.json")
    with pytest.raises(UnsupportedModelError, match="no \\*.safetensors"):
        load_model(tmp_path, dtype=torch.float32, device="cpu", max_positions=16)


def test_untied_checkpoint_with_explicit_head_loads_it(qwen2_checkpoint):
    folder, hf_model = qwen2_checkpoint
    model = load_model(folder, dtype=torch.float32, device="cpu", max_positions=16)
    torch.testing.assert_close(model.lm_head.weight, hf_model.lm_head.weight)
