"""The eval gate end to end: `slipway up`, custom packages answering in OpenAI chat shape, the CLI.

Each package's predict answers a chat body with a chat completion, deterministically: version 1
knows half the answers, version 2 none, version 3 all. Runs go through the real gateway
(/deployments/{id}/predict) from the eval worker inside `slipway up`.
"""

from __future__ import annotations

import json
import time

MODEL_PY = '''
ANSWERS = {f"What is {i} plus {i}?": str(2 * i) for i in range(20)}
KNOWS = %r


class Model:
    def predict(self, request):
        question = [m for m in request["messages"] if m["role"] == "user"][-1]["content"]
        right = ANSWERS.get(question, "?")
        known = KNOWS == "all" or (KNOWS == "half" and int(right) %% 4 == 0)
        answer = right if known else "I do not know"
        return {"id": "chatcmpl-qa", "object": "chat.completion", "created": 0, "model": "qa",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": answer}}]}
'''


def write_package(root, knows: str):
    folder = root / f"qa-{knows}"
    folder.mkdir()
    (folder / "slipway.yaml").write_text("name: qa\nkind: custom\nautoscaling: {min_replica: 1, max_replica: 1}\n")
    (folder / "model.py").write_text(MODEL_PY % knows)
    return folder


def production_of(node) -> str | None:
    with node.http() as http:
        environments = http.get("/api/v1/models/qa/environments").json()["data"]
    return next(e["deployment_id"] for e in environments if e["name"] == "production")


def test_the_gate_refuses_a_worse_candidate_and_promotes_a_better_one(slipway_up, tmp_path):
    node = slipway_up
    node.cli("deploy", str(write_package(tmp_path, "half")), "--promote")
    first = production_of(node)
    suite = tmp_path / "arith.jsonl"
    suite.write_text("".join(json.dumps({"input": f"What is {i} plus {i}?", "ideal": str(2 * i)}) + "\n"
                             for i in range(8)))
    created = node.cli("evals", "suites", "create", str(suite), "--name", "arith", "--grader", "exact",
                       "--grader", '{"type": "includes", "name": "mentions"}')
    assert "8 items" in created.stdout

    ran = node.cli("evals", "run", "arith", "--target", "qa#1")
    assert "0.5000" in ran.stdout and first in ran.stdout, ran.stdout

    node.cli("deploy", str(write_package(tmp_path, "none")))
    refused = node.cli("promote", "qa", "--deployment", "2", "--gate", "arith:0.2,no-regression", check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    error = " ".join(refused.stderr.split())
    assert "refused the promotion" in error and "candidate 0.0000" in error and "production 0.5000" in error
    assert production_of(node) == first

    node.cli("deploy", str(write_package(tmp_path, "all")))
    accepted = node.cli("promote", "qa", "--deployment", "3", "--gate", "arith:0.2,no-regression")
    assert "Promoted" in accepted.stdout and "candidate 1.0000, production 0.5000" in " ".join(accepted.stdout.split())
    deadline = time.monotonic() + 30
    while production_of(node) == first:
        assert time.monotonic() < deadline, "production did not switch to deployment #3"
        time.sleep(0.2)
    listed = node.cli("evals", "ls")
    assert listed.stdout.count("succeeded") >= 5, listed.stdout
