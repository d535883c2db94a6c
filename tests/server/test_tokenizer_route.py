"""GET /tokenizer: an llm replica serves the files its tokenizer is loaded from and its KV block size,
so a kv_aware gateway can tokenize prompts exactly as the replica does."""

from __future__ import annotations

import base64

import httpx
import pytest
from transformers import AutoTokenizer

from slipway.server.app import ReplicaApp
from slipway.spec.package import parse_package
from tests.engine.conftest import _save_model
from tests.server.conftest import InThreadReplica, write_package

BLOCK_SIZE = 8
CHAT_TEMPLATE = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llm-tokenizer")
    _save_model(folder, "llama", seed=5)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (folder / "tokenizer.model").write_bytes(b"\x00\x01binary\xff")  # served as base64, byte for byte
    return folder


def llm_spec(folder) -> object:
    return parse_package(f"name: tiny\nkind: llm\nweights: {folder}\nresources: {{cpu: 1}}\nruntime: "
                         f"{{max_model_len: 256, max_num_seqs: 4, dtype: float32, block_size: {BLOCK_SIZE}}}\n")


@pytest.fixture(scope="module")
def replica(tiny_llama):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLIPWAY_LLM_KV_CACHE_MEMORY", "4Mi")
        with InThreadReplica(ReplicaApp(llm_spec(tiny_llama), tiny_llama)) as served:
            served.wait_ready()
            yield served


def test_an_llm_replica_serves_its_tokenizer_files_and_block_size(replica, tiny_llama):
    answer = httpx.get(f"{replica.url}/tokenizer", timeout=10).json()
    assert answer["model"] == "tiny" and answer["kv_block_size"] == BLOCK_SIZE
    files = answer["files"]
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json"} <= set(files)
    assert "model.safetensors" not in files and "model.safetensors" not in answer["binary_files"]
    for name, text in files.items():
        assert text == (tiny_llama / name).read_text(), name
    assert base64.b64decode(answer["binary_files"]["tokenizer.model"]) == b"\x00\x01binary\xff"


def test_the_served_files_load_the_replicas_own_tokenizer(replica, tmp_path):
    answer = httpx.get(f"{replica.url}/tokenizer", timeout=10).json()
    for name, text in answer["files"].items():
        (tmp_path / name).write_text(text)
    rebuilt = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    own = replica.app.runtime.engine.tokenizer
    text = "hello world, the end!"
    assert rebuilt(text)["input_ids"] == own(text)["input_ids"]
    assert rebuilt.chat_template == own.chat_template == CHAT_TEMPLATE


async def test_a_loading_replica_answers_503_with_retry_after(tiny_llama):
    app = ReplicaApp(llm_spec(tiny_llama), tiny_llama)  # never started: still loading
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://replica") as client:
        response = await client.get("/tokenizer")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "loading"


def test_a_replica_of_another_kind_has_no_tokenizer(tmp_path, start_replica):
    package = write_package(tmp_path / "echo", "name: echo\nkind: custom\n", """
        class Model:
            def load(self):
                pass

            def predict(self, request):
                return request
    """)
    replica = start_replica(package)
    replica.wait_ready()
    with replica.client() as http:
        response = http.get("/tokenizer")
    assert response.status_code == 404
    error = response.json()["error"]
    assert "kind 'custom'" in error["message"] and "only kind 'llm'" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
