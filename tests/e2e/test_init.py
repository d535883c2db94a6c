"""`slipway init` scaffolds packages that deploy and answer as they are."""

from __future__ import annotations

import openai


def test_init_custom_and_embedding_deploy_as_is(slipway_up, tmp_path):
    slipway_up.cli("init", "my-model", "--kind", "custom", "--dir", str(tmp_path / "my-model"))
    slipway_up.cli("deploy", str(tmp_path / "my-model"), "--promote")
    answer = slipway_up.cli("predict", "my-model", "-d", '{"hello": "world"}').stdout
    assert '"hello": "world"' in answer

    slipway_up.cli("init", "my-embedder", "--kind", "embedding", "--dir", str(tmp_path / "my-embedder"))
    slipway_up.cli("deploy", str(tmp_path / "my-embedder"))  # development environment
    client = openai.OpenAI(base_url=f"{slipway_up.url}/v1", api_key=slipway_up.admin_key)
    vectors = client.embeddings.create(model="my-embedder", input=["hello"]).data
    assert len(vectors[0].embedding) == 384

    refused = slipway_up.cli("init", "my-model", "--dir", str(tmp_path / "my-model"), check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
