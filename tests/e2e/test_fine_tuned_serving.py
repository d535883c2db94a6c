"""Acceptance: a fine-tuning job's model answers through the gateway on its base's replicas.

A real `slipway up` serves a tiny random Llama (float32, builtin engine); `slipway train` runs a
real LoRA job on it; then the official `openai` client asks `tiny:ft-arith` and `tiny` through
the gateway. The fine-tuned answer must be the adapter's own greedy tokens (PEFT's merge of the
job's adapter, run by transformers), and the base's the base's: one replica serves both.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import openai

from tests.engine.conftest import hf_greedy
from tests.train.conftest import chat_row, save_tiny_llama

MAX_TOKENS = 8
QUESTION = [{"role": "user", "content": "What is 3 plus 3?"}]


def write_package(root: Path, weights: Path) -> Path:
    package = root / "tiny"
    package.mkdir()
    (package / "slipway.yaml").write_text(
        f"name: tiny\nkind: llm\nweights: {weights}\nresources: {{cpu: 1}}\n"
        "autoscaling: {min_replica: 1, max_replica: 1}\n"
        "runtime: {max_model_len: 128, max_num_seqs: 8, dtype: float32, "
        "env: {SLIPWAY_LLM_KV_CACHE_MEMORY: 8Mi}}\n")
    return package


def reference(weights: Path, adapter: Path | None) -> str:
    """Greedy text of QUESTION from transformers in float32: the base, or the adapter merged by PEFT."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(weights), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(weights), torch_dtype="float32")
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    ids = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True, return_dict=False)
    return tokenizer.decode(hf_greedy(model.eval(), ids, MAX_TOKENS), skip_special_tokens=True)


def test_a_fine_tuned_model_answers_through_the_gateway_on_its_base_replicas(slipway_up, tmp_path):
    weights = save_tiny_llama(tmp_path / "weights")
    deployed = slipway_up.cli("deploy", str(write_package(tmp_path, weights)), "--promote")
    assert "Ready" in deployed.stdout, deployed.stdout
    data = tmp_path / "arith.jsonl"
    data.write_text("".join(json.dumps(chat_row(i)) + "\n" for i in range(12)))
    slipway_up.cli("train", "--model", "tiny", "--dataset", str(data), "--suffix", "arith", "--epochs", "3",
                   "--lora-rank", "4", "--learning-rate-multiplier", "20", "--seed", "1", timeout=600)

    http = slipway_up.http()
    [job] = http.get("/api/v1/fine_tuning/jobs").json()["data"]
    assert (job["status"], job["fine_tuned_model"]) == ("succeeded", "tiny:ft-arith"), job
    adapter = slipway_up.home / "fine_tuning" / job["id"] / "adapter"
    assert (adapter / "adapter_config.json").is_file()

    key = slipway_up.cli("keys", "create", "--scope", "invoke", "--name", "ft").stdout.strip().splitlines()[-1]
    client = openai.OpenAI(base_url=f"{slipway_up.url}/v1", api_key=key, max_retries=0)
    assert {"tiny", "tiny:ft-arith"} <= {m.id for m in client.models.list().data}
    deadline = time.monotonic() + 30
    while True:  # the gateway follows the routing snapshot, which the job's success bumped
        try:
            tuned = client.chat.completions.create(model="tiny:ft-arith", messages=QUESTION, max_tokens=MAX_TOKENS,
                                                   temperature=0)
            break
        except openai.NotFoundError:
            assert time.monotonic() < deadline, "tiny:ft-arith never became routable"
            time.sleep(0.5)
    base = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=MAX_TOKENS, temperature=0)

    assert tuned.model == "tiny:ft-arith" and base.model == "tiny"
    assert tuned.choices[0].message.content == reference(weights, adapter)
    assert base.choices[0].message.content == reference(weights, None)
    assert tuned.choices[0].message.content != base.choices[0].message.content, "the adapter changed nothing"
    stats = http.get("/api/v1/deployments").json()["data"]
    assert len(stats) == 1, "the fine-tuned model runs on the base's deployment, not a new one"

    # A kept checkpoint answers too, with its own adapter, and an eval run may target it.
    checkpoint = http.get(f"/api/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"][-1]
    name = checkpoint["fine_tuned_model_checkpoint"]
    assert name == f"tiny:ft-arith:ckpt-step-{checkpoint['step_number']}"
    early = client.chat.completions.create(model=name, messages=QUESTION, max_tokens=MAX_TOKENS, temperature=0)
    folder = slipway_up.home / "fine_tuning" / job["id"] / "checkpoints" / f"step-{checkpoint['step_number']}"
    assert early.choices[0].message.content == reference(weights, folder / "adapter")
    suite = http.post("/api/v1/evals/suites", json={
        "name": "arith", "items": [{"messages": QUESTION, "ideal": "It is 6."}],
        "graders": [{"type": "exact"}]})
    assert suite.status_code == 201, suite.text
    run = http.post("/api/v1/evals/runs", json={"suite": "arith", "target": name})
    assert run.status_code == 201, run.text
    assert (run.json()["target_kind"], run.json()["target"]) == ("environment", name)
