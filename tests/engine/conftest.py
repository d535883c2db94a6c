"""Tiny random Llama-family checkpoints, saved as real Hugging Face folders, shared by the engine tests.

Each model is a few layers wide enough to exercise grouped-query attention, with a real
tokenizer (one token per character or short word, joined without separators) so that text and
stop strings run through the same code as with a downloaded model.
"""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

VOCAB_SIZE = 256
EOS_ID = 2


def _vocabulary() -> list[str]:
    words = ["<unk>", "<s>", "</s>"] + list(string.ascii_lowercase + string.ascii_uppercase + string.digits)
    words += list(" .,;:!?-_()[]{}'\"/\\|@#$%^&*+=<>~`")
    extra = ["the", "and", "stop", "end", "hello", "world", "é"]
    words += [w for w in extra if w not in words]
    words += [f"w{i}" for i in range(VOCAB_SIZE - len(words))]
    return words


def _save_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: index for index, word in enumerate(_vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(folder)


def _save_model(folder: Path, kind: str, seed: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  bos_token_id=1, eos_token_id=EOS_ID, initializer_range=0.1)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(tie_word_embeddings=True, **common))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(tie_word_embeddings=False, **common))
        with torch.no_grad():  # random init leaves biases at zero; make them matter
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.1)
    model.eval()
    model.save_pretrained(folder)
    _save_tokenizer(folder)
    return model


@pytest.fixture(scope="session")
def llama_checkpoint(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("tiny-llama")
    return folder, _save_model(folder, "llama", seed=1)


@pytest.fixture(scope="session")
def qwen2_checkpoint(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("tiny-qwen2")
    return folder, _save_model(folder, "qwen2", seed=2)


@pytest.fixture(scope="session", params=["llama", "qwen2"])
def checkpoint(request) -> tuple[Path, torch.nn.Module]:
    return request.getfixturevalue(f"{request.param}_checkpoint")


def hf_greedy(model: torch.nn.Module, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Hugging Face's own greedy continuation of one prompt (stops at EOS like the engine)."""
    with torch.no_grad():
        ids = torch.tensor([prompt])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def random_prompt(length: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB_SIZE, (length,), generator=generator).tolist()
