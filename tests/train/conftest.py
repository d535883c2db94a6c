"""A tiny random Llama with a real chat template, and small chat datasets, for the trainer's tests.

The tokenizer has one token per character (plus "</s>"), so a test can say exactly which
characters, and therefore which tokens, the loss is on. The chat template renders

    <user>hi</s><assistant>hello</s>

so an assistant turn's trained span is its content followed by "</s>".
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch

# Tiny matrices run fastest on one thread, and tests share the machine with each other.
torch.set_num_threads(1)

VOCAB_SIZE = 128
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def _vocabulary() -> list[str]:
    words = ["<unk>", "<s>", "</s>"] + list(string.ascii_lowercase + string.ascii_uppercase + string.digits)
    words += list(" .,;:!?-_()[]{}'\"/\\|@#$%^&*+=<>~`")
    return words + [f"w{i}" for i in range(VOCAB_SIZE - len(words))]


def save_tokenizer(folder: Path, chat_template: str | None = CHAT_TEMPLATE) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: index for index, word in enumerate(_vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>")
    if chat_template is not None:
        fast.chat_template = chat_template
    fast.save_pretrained(folder)


def save_tiny_llama(folder: Path, *, chat_template: str | None = CHAT_TEMPLATE) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True,
                         # Large enough embeddings that adapting the layers can move the tied output logits.
                         initializer_range=0.3)
    LlamaForCausalLM(config).save_pretrained(folder)
    save_tokenizer(folder, chat_template)
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-chat"))


def chat_row(i: int) -> dict:
    return {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": f"What is {i} plus {i}?"},
                         {"role": "assistant", "content": f"It is {2 * i}."}]}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
