"""The official `openai` client through the gateway against a fake embeddings replica."""

from __future__ import annotations

import openai
import pytest

from tests.gateway.conftest import ADMIN_A, world


def test_openai_client_embeddings_and_errors(replicas, gateway):
    (replica,) = replicas(1)
    snapshot = world([replica.url])
    snapshot.deployments[2].replicas[0].url = replica.url  # d-emb
    gw = gateway(snapshot)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=ADMIN_A, max_retries=0, timeout=10)

    result = client.embeddings.create(model="embedder", input=["one", "two"])
    assert [item.index for item in result.data] == [0, 1]
    assert result.data[0].embedding == pytest.approx([0.1, 0.2, 0.3])
    assert result.usage.prompt_tokens == 2
    assert [m.id for m in client.models.list()] == ["drafts", "drafts@development", "echo", "echo@development",
                                                   "embedder"]

    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(model="nope", input="x")
    assert "'nope' does not exist" in missing.value.message
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-slw-wrong", max_retries=0).embeddings.create(
            model="embedder", input="x")
    (record,) = gw.sink.wait_for(1)
    assert (record.route, record.input_units) == ("embeddings", 2)
