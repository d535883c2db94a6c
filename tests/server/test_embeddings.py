"""The examples/minilm package served by a real replica process: OpenAI /v1/embeddings end to end.

The model loads once, in one replica, for every check in this file.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.server.conftest import REPO, launch_replica


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    replica = launch_replica(REPO / "examples" / "minilm", tmp_path_factory.mktemp("minilm"), "r-minilm")
    replica.wait_ready(timeout=90)
    yield replica
    replica.stop()


def test_embeddings_over_http(minilm):
    with minilm.client() as http:
        texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell today."]
        response = http.post("/v1/embeddings", json={"model": "minilm", "input": texts})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "list" and body["model"] == "minilm"
        vectors = np.array([item["embedding"] for item in body["data"]])
        assert vectors.shape == (3, 384)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        # Meaning, not noise: the two sentences about eating are closer than either is to the market.
        assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
        assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > len(texts)

        packed = http.post("/v1/embeddings", json={"model": "minilm", "input": texts[0],
                                                   "encoding_format": "base64"}).json()
        decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
        assert np.allclose(decoded, vectors[0], atol=1e-6)

        predicted = http.post("/predict", json={"input": texts[0]}).json()
        assert np.allclose(predicted["data"][0]["embedding"], vectors[0], atol=1e-6)


def test_bad_embedding_requests_and_routes(minilm):
    with minilm.client() as http:
        tokens = http.post("/v1/embeddings", json={"model": "minilm", "input": [101, 2023, 102]})
        assert tokens.status_code == 400 and tokens.json()["error"]["param"] == "input"
        assert "token ids" in tokens.json()["error"]["message"]
        wrong_type = http.post("/v1/embeddings", json={"model": "minilm", "input": {"text": "x"}})
        assert wrong_type.status_code == 400 and wrong_type.json()["error"]["param"].startswith("input")
        chat = http.post("/v1/chat/completions", json={"model": "minilm", "messages": []})
        assert chat.status_code == 404 and "kind 'embedding'" in chat.json()["error"]["message"]

        stats = http.get("/stats").json()
        assert stats["kind"] == "embedding" and stats["dimension"] == 384 and stats["ready"] is True
        assert stats["inputs_total"] >= 1 and stats["waiting"] == 0
