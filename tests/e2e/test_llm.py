"""Acceptance: examples/smollm2 on the built-in engine behind a real `slipway up`, called with the
official openai client through the gateway.

The package is deployed with `runtime.dtype: float32` (the example itself says `auto`), so that
its greedy output can be held against Hugging Face transformers in float32, token for token.
Every home's `models/` links to one conversion cache for the session: the GGUF file is
converted once per test run.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import yaml

from slipway.runtimes.gguf_convert import hf_folder_for
from slipway.runtimes.weights import resolve_weights
from tests.e2e.conftest import EXAMPLES, Slipway, free_port, replica_pids

MODEL = "smollm2"
MAX_MODEL_LEN = 2048
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@dataclass
class Deployed:
    node: Slipway
    client: openai.OpenAI
    model_dir: Path
    tokenizer: object


@pytest.fixture(scope="session")
def converted_models(tmp_path_factory) -> Path:
    """The GGUF conversion cache shared by every slipway home of this session."""
    return tmp_path_factory.mktemp("converted-models")


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory, converted_models):
    root = tmp_path_factory.mktemp("llm-e2e")
    home = root / "home"
    home.mkdir()
    (home / "models").symlink_to(converted_models, target_is_directory=True)
    package = root / "smollm2"
    shutil.copytree(EXAMPLES / "smollm2", package)
    spec = yaml.safe_load((package / "slipway.yaml").read_text())
    spec["runtime"]["dtype"] = "float32"
    (package / "slipway.yaml").write_text(yaml.safe_dump(spec))

    node = Slipway(home=home, port=free_port())
    try:
        node.start()
        started = time.monotonic()
        deployed = node.cli("deploy", str(package), "--promote")
        print(f"\nsmollm2 deploy to ready: {time.monotonic() - started:.1f}s")
        assert "Ready" in deployed.stdout, deployed.stdout
        for pid in replica_pids(home):
            status = Path(f"/proc/{pid}/status").read_text()
            rss = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
            print(f"smollm2 replica {pid} RSS: {int(rss) / 1024:.0f} MiB")
            assert int(rss) * 1024 < 1.5e9, "the replica should stay under 1.5 GB"
        key = node.cli("keys", "create", "--scope", "invoke", "--name", "llm-e2e").stdout.strip().splitlines()[-1]
        model_dir = hf_folder_for(resolve_weights(spec["weights"], package), models_dir=converted_models)
        from transformers import AutoTokenizer

        yield Deployed(node, openai.OpenAI(base_url=f"{node.url}/v1", api_key=key, max_retries=0), model_dir,
                       AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True))
    finally:
        node.cleanup()


def template_ids(smollm2: Deployed, messages) -> list[int]:
    return smollm2.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)


def test_chat_whole_and_streamed_with_exact_usage(smollm2):
    client = smollm2.client
    answer = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24, temperature=0,
                                            logprobs=True)
    assert answer.object == "chat.completion" and answer.model == MODEL
    content = answer.choices[0].message.content
    assert "Paris" in content
    assert answer.usage.prompt_tokens == len(template_ids(smollm2, QUESTION))
    assert answer.usage.completion_tokens == len(answer.choices[0].logprobs.content) > 0

    chunks = list(client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == content
    assert chunks[-2].choices[0].finish_reason == answer.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == answer.usage.total_tokens


def test_completions_whole_and_streamed(smollm2):
    client = smollm2.client
    prompt = "The three primary colors are"
    answer = client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0,
                                       extra_body={"ignore_eos": True})
    assert answer.object == "text_completion" and answer.choices[0].finish_reason == "length"
    assert answer.usage.prompt_tokens == len(smollm2.tokenizer(prompt).input_ids)
    assert answer.usage.completion_tokens == 12
    chunks = list(client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0, stream=True,
                                            stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == answer.choices[0].text
    assert chunks[-1].usage.completion_tokens == 12


def test_same_seed_same_text(smollm2):
    def sample(seed: int) -> str:
        return smollm2.client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=20,
                                                 temperature=1.0, seed=seed).choices[0].text

    assert sample(1234) == sample(1234)


@pytest.mark.parametrize(("request_", "param", "says"), [
    ({"messages": [{"role": "user", "content": "hello " * 2100}]}, "messages", f"max_model_len) is {MAX_MODEL_LEN}"),
    ({"messages": QUESTION, "max_tokens": MAX_MODEL_LEN}, "max_tokens", f"asks for {MAX_MODEL_LEN} more"),
    ({"messages": QUESTION, "max_tokens": 0}, "max_tokens", "1 or more"),
    ({"messages": QUESTION, "n": 17}, "n", "1 to 16"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role", "'user'"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content", "text only"),
], ids=["prompt-too-long", "prompt-plus-max-tokens", "max-tokens-0", "n-17", "unknown-role", "image-part"])
def test_bad_requests_are_openai_400s(smollm2, request_, param, says):
    with pytest.raises(openai.BadRequestError) as caught:
        smollm2.client.chat.completions.create(model=MODEL, **request_)
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == param and says in caught.value.body["message"]


def test_an_unknown_model_is_a_404_as_openai_answers(smollm2):
    with pytest.raises(openai.NotFoundError) as caught:
        smollm2.client.chat.completions.create(model="no-such-model", messages=QUESTION)
    assert "no-such-model" in caught.value.body["message"]


def test_usage_records_carry_exact_tokens_of_streams_and_answers(smollm2):
    def totals() -> tuple[int, int]:
        with smollm2.node.http() as http:
            rows = http.get("/api/v1/usage", params={"group_by": "model"}).json()["data"]
        row = next((r for r in rows if r["model"] == MODEL), {"input_units": 0, "output_units": 0})
        return row["input_units"], row["output_units"]

    def settled() -> tuple[int, int]:
        last, deadline = totals(), time.monotonic() + 15
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = totals()
            if now == last:
                return now
            last = now
        return last

    before = settled()
    *_, last = smollm2.client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8, stream=True,
                                                      stream_options={"include_usage": True})
    answer = smollm2.client.completions.create(model=MODEL, prompt="One, two,", max_tokens=5)
    expected = (before[0] + last.usage.prompt_tokens + answer.usage.prompt_tokens,
                before[1] + last.usage.completion_tokens + answer.usage.completion_tokens)
    deadline = time.monotonic() + 15
    while totals() != expected:
        assert time.monotonic() < deadline, f"usage {totals()} never reached {expected}"
        time.sleep(0.2)
    table = smollm2.node.cli("usage", "--group-by", "model").stdout
    assert MODEL in table and str(expected[0]) in table and str(expected[1]) in table


def test_greedy_output_equals_transformers_in_float32(smollm2):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(smollm2.model_dir), dtype=torch.float32).eval()
    prompt = template_ids(smollm2, QUESTION)
    with torch.no_grad():
        ids = torch.tensor([prompt])
        output = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False)
    expected = output[0, len(prompt):].tolist()
    answer = smollm2.client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=16, temperature=0)
    assert answer.choices[0].message.content == smollm2.tokenizer.decode(expected, skip_special_tokens=True)
    assert answer.usage.completion_tokens == len(expected)
