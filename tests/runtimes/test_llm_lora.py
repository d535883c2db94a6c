"""LoRA adapters on a builtin-engine replica, over real HTTP on 127.0.0.1 with the official openai
client: `adapters:` of slipway.yaml registered at load, `model` picking an adapter (anything else:
the base), vLLM's load/unload routes, /v1/models and /v1/lora_adapters, the gateway's adapter
headers, and a merged deployment. References: PEFT's merge_and_unload() generating greedily."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx
import openai
import pytest

from slipway.errors import RuntimeLoadError, SpecError
from slipway.runtimes.llm_builtin import BuiltinLlmConfig, BuiltinLlmRuntime
from slipway.server.app import ReplicaApp
from slipway.spec.package import parse_package
from slipway.spec.replica import ADAPTER_HEADER, ADAPTER_PATH_HEADER
from tests.engine.conftest import _save_model, hf_greedy
from tests.engine.test_lora import save_adapter
from tests.server.conftest import InThreadReplica

MAX_TOKENS = 8
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


class Models:
    """The base folder, the tokenizer, and each adapter's folder and merged reference model."""

    def __init__(self, root: Path) -> None:
        self.base_folder = root / "base"
        self.base = _save_model(self.base_folder, "llama", seed=7)
        (self.base_folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(self.base_folder))
        self.folders = {name: root / "adapters" / name for name in ("alpha", "beta", "gamma")}
        self.merged = {
            "alpha": save_adapter(self.base, self.folders["alpha"], seed=1, r=4, lora_alpha=8,
                                  target_modules=["q_proj", "v_proj"]),
            "beta": save_adapter(self.base, self.folders["beta"], seed=2, r=8, lora_alpha=16,
                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj"]),
            "gamma": save_adapter(self.base, self.folders["gamma"], seed=3, r=2, lora_alpha=4,
                                  target_modules=["gate_proj", "down_proj"], use_rslora=True),
        }

    def text(self, adapter: str | None, prompt: str) -> str:
        """The reference completion of `prompt` (a text completion) with `adapter` merged, or the base."""
        ids = self.tokenizer(prompt).input_ids
        tokens = hf_greedy(self.merged[adapter] if adapter else self.base, ids, MAX_TOKENS)
        return self.tokenizer.decode(tokens, skip_special_tokens=True)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Models:
    return Models(tmp_path_factory.mktemp("lora-replica"))


def package(models: Models, root: Path, extra: str = "") -> tuple:
    """A package whose adapters alpha and beta lie inside it (relative paths), gamma outside."""
    folder = root / "package"
    (folder / "adapters").mkdir(parents=True)
    for name in ("alpha", "beta"):
        (folder / "adapters" / name).symlink_to(models.folders[name], target_is_directory=True)
    yaml = (f"name: tiny\nkind: llm\nweights: {models.base_folder}\nresources: {{cpu: 1}}\n"
            "adapters: {alpha: ./adapters/alpha, beta: adapters/beta}\n"
            "runtime: {max_model_len: 128, max_num_seqs: 8, dtype: float32}\n" + extra)
    (folder / "slipway.yaml").write_text(yaml)
    return parse_package(yaml), folder


@pytest.fixture(scope="module")
def replica(models, tmp_path_factory):
    spec, folder = package(models, tmp_path_factory.mktemp("served"))
    mp = pytest.MonkeyPatch()
    mp.setenv("SLIPWAY_LLM_KV_CACHE_MEMORY", "8Mi")
    try:
        with InThreadReplica(ReplicaApp(spec, folder)) as server:
            server.wait_ready()
            yield server
    finally:
        mp.undo()


@pytest.fixture
def client(replica) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{replica.url}/v1", api_key="unused", max_retries=0)


def complete(client: openai.OpenAI, model: str, prompt: str) -> tuple[str, str]:
    answer = client.completions.create(model=model, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0)
    return answer.model, answer.choices[0].text


# -- serving ----------------------------------------------------------------------------------------


def test_the_model_field_picks_an_adapter_and_anything_else_is_the_base(client, models):
    prompts = ["hello world", "the end", "stop and go", "abc"]
    jobs = [(model, prompt) for prompt in prompts for model in ("alpha", "beta", "tiny", "something-else")]
    with ThreadPoolExecutor(len(jobs)) as pool:  # all at once: adapters and the base share batches
        answers = list(pool.map(lambda job: complete(client, *job), jobs))
    for (model, prompt), (answered_model, text) in zip(jobs, answers):
        adapter = model if model in ("alpha", "beta") else None
        assert text == models.text(adapter, prompt), (model, prompt)
        assert answered_model == (adapter or "tiny")
    assert any(models.text("alpha", p) != models.text(None, p) for p in prompts), "the adapter changes answers"


def test_a_streamed_chat_with_an_adapter(client, models):
    messages = [{"role": "user", "content": "hello"}]
    stream = client.chat.completions.create(model="beta", messages=messages, max_tokens=MAX_TOKENS, temperature=0,
                                            stream=True)
    chunks = list(stream)
    assert {chunk.model for chunk in chunks} == {"beta"}
    content = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    ids = models.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    expected = hf_greedy(models.merged["beta"], ids, MAX_TOKENS)
    assert content == models.tokenizer.decode(expected, skip_special_tokens=True)


def test_models_and_lora_adapters_list_the_base_and_its_adapters(replica, models):
    listed = httpx.get(f"{replica.url}/v1/models").json()
    assert listed["object"] == "list"
    by_id = {model["id"]: model for model in listed["data"]}
    assert by_id["tiny"]["parent"] is None and by_id["tiny"]["object"] == "model"
    assert by_id["alpha"]["parent"] == "tiny" and by_id["beta"]["parent"] == "tiny"
    adapters = httpx.get(f"{replica.url}/v1/lora_adapters").json()["data"]
    assert {a["name"]: Path(a["path"]) for a in adapters if a["name"] in ("alpha", "beta")} == {
        "alpha": models.folders["alpha"].resolve(), "beta": models.folders["beta"].resolve()}
    stats = httpx.get(f"{replica.url}/stats").json()
    assert stats["loras_registered"] >= 2 and stats["loras_loaded"] <= stats["loras_registered"]


# -- loading and unloading at run time ----------------------------------------------------------------


def test_vllms_load_and_unload_routes(replica, client, models):
    url = replica.url
    gamma = str(models.folders["gamma"])
    loaded = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": "gamma", "lora_path": gamma})
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["name"] == "gamma" and "added successfully" in loaded.json()["message"]
    assert complete(client, "gamma", "hello") == ("gamma", models.text("gamma", "hello"))
    again = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": "gamma", "lora_path": gamma})
    assert again.status_code == 200, "the same name and folder again changes nothing"
    assert "gamma" in [a["name"] for a in httpx.get(f"{url}/v1/lora_adapters").json()["data"]]

    unloaded = httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": "gamma"})
    assert unloaded.status_code == 200 and "removed successfully" in unloaded.json()["message"]
    assert complete(client, "gamma", "hello") == ("tiny", models.text(None, "hello")), "gone: the base answers"
    missing = httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": "gamma"})
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert error["code"] == "lora_not_found" and "GET /v1/lora_adapters" in error["message"]
    assert set(error) >= {"message", "type", "param", "code"}


@pytest.mark.parametrize("body, param, fragment", [
    ({"lora_path": "/x"}, "lora_name", "'lora_name' must be a non-empty string"),
    ({"lora_name": "x"}, "lora_path", "'lora_path' must be a non-empty string"),
    ({"lora_name": "x", "lora_path": "/no/such/folder"}, "lora_path", "does not exist on this replica"),
    ({"lora_name": "tiny", "lora_path": "/x"}, "lora_name", "the base model's name"),
])
def test_load_errors_are_openai_400s_that_say_what_to_fix(replica, body, param, fragment):
    response = httpx.post(f"{replica.url}/v1/load_lora_adapter", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and fragment in error["message"]


def test_a_folder_that_is_not_an_adapter_of_this_base_is_a_400(replica, models, tmp_path):
    response = httpx.post(f"{replica.url}/v1/load_lora_adapter",
                          json={"lora_name": "weights", "lora_path": str(models.base_folder)})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_lora_adapter" and "adapter_config.json is missing" in error["message"]
    taken = httpx.post(f"{replica.url}/v1/load_lora_adapter",
                       json={"lora_name": "alpha", "lora_path": str(models.folders["beta"])})
    assert taken.status_code == 400 and "already registered" in taken.json()["error"]["message"]


def test_the_gateways_adapter_headers_register_the_adapter_on_first_sight(replica, models):
    name = "tiny:ft-gamma"
    headers = {ADAPTER_HEADER: quote(name, safe=""), ADAPTER_PATH_HEADER: quote(str(models.folders["gamma"]))}
    for model in (name, f"{name}@production"):  # registered by the first request, found by the second
        answer = httpx.post(f"{replica.url}/v1/completions", headers=headers,
                            json={"model": model, "prompt": "the end", "max_tokens": MAX_TOKENS, "temperature": 0})
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == name
        assert answer.json()["choices"][0]["text"] == models.text("gamma", "the end")
    adapters = {a["name"] for a in httpx.get(f"{replica.url}/v1/lora_adapters").json()["data"]}
    assert name in adapters
    bad = {ADAPTER_HEADER: "broken", ADAPTER_PATH_HEADER: quote(str(models.base_folder))}
    refused = httpx.post(f"{replica.url}/v1/completions", headers=bad, json={"model": "broken", "prompt": "abc"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_lora_adapter"


# -- loading the package --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["slipway.yaml", "environment"])
async def test_a_merged_deployment_serves_the_adapter_as_its_base(models, tmp_path, how):
    spec, folder = package(models, tmp_path)
    settings = {"SLIPWAY_LLM_KV_CACHE_MEMORY": "8Mi"}
    if how == "slipway.yaml":
        runtime_settings = spec.runtime.model_copy(update={"merge_adapter": "./adapters/beta"})
        spec = spec.model_copy(update={"adapters": {}, "runtime": runtime_settings})
    else:
        settings["SLIPWAY_LLM_MERGE_ADAPTER"] = "./adapters/beta"
        spec = spec.model_copy(update={"adapters": {}})
    runtime = BuiltinLlmRuntime(spec, folder, config=BuiltinLlmConfig.from_env(settings))
    await runtime.load()
    try:
        answer = await runtime.completions({"model": "tiny", "prompt": "hello", "max_tokens": MAX_TOKENS,
                                            "temperature": 0})
        assert answer["choices"][0]["text"] == models.text("beta", "hello")
    finally:
        await runtime.close()


def test_merge_adapter_is_for_the_builtin_engine_only():
    with pytest.raises(SpecError, match="merge_adapter applies to kind 'llm' with engine 'builtin' only"):
        parse_package("name: tiny\nkind: llm\nengine: vllm\nweights: ./w\nruntime: {merge_adapter: ./a}\n")


async def test_an_adapter_in_slipway_yaml_that_does_not_fit_fails_the_load(models, tmp_path):
    spec, folder = package(models, tmp_path)
    spec = spec.model_copy(update={"adapters": {"alpha": "./adapters/alpha", "broken": str(models.base_folder)}})
    runtime = BuiltinLlmRuntime(spec, folder, config=BuiltinLlmConfig(kv_cache_memory="8Mi"))
    try:
        with pytest.raises(RuntimeLoadError, match="adapters.broken in slipway.yaml: .*adapter_config.json is missing"):
            await runtime.load()
    finally:
        await runtime.close()
