"""Acceptance: each bad input gets its clear error and leaves nothing half-written."""

from __future__ import annotations

import shutil
import time

import httpx

from tests.e2e.conftest import EXAMPLES


def _package(tmp_path, name: str, yaml_text: str, model_py: str | None) -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "slipway.yaml").write_text(yaml_text)
    if model_py is not None:
        (folder / "model.py").write_text(model_py)
    return str(folder)


def _models(node) -> list[str]:
    with node.http() as http:
        return [m["name"] for m in http.get("/api/v1/models").json()["data"]]


def _one_line_error(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    return result.stderr


def test_bad_packages_are_refused_with_every_problem(slipway_up, tmp_path):
    malformed = _package(tmp_path, "malformed", "name: x\nkind: [custom\n", "class Model: ...\n")
    error = _one_line_error(slipway_up.cli("deploy", malformed, check=False))
    assert "not valid YAML" in error and "line" in error

    invalid = _package(tmp_path, "invalid", "name: Bad_Name\nkind: custom\nreplicas: 3\n"
                       "autoscaling: {min_replica: 4, max_replica: 2}\n", "class Model: ...\n")
    error = _one_line_error(slipway_up.cli("deploy", invalid, check=False))
    for expected in ("name", "replicas: unknown field", "min_replica (4) is greater than max_replica (2)"):
        assert expected in error, error

    missing = _package(tmp_path, "missing", "name: nomodel\nkind: custom\n", None)
    error = _one_line_error(slipway_up.cli("deploy", missing, check=False))
    assert "model.py" in error

    # The server refuses the same package when the CLI's own check is bypassed.
    from slipway.client import pack_package

    with slipway_up.http() as http:
        response = http.post("/api/v1/deployments", content=pack_package(missing),
                             headers={"Content-Type": "application/gzip"})
        assert response.status_code == 400
        assert "model.py" in response.json()["error"]["message"]
    assert _models(slipway_up) == []
    assert not any((slipway_up.home / "packages").rglob("slipway.yaml"))


def test_load_failure_marks_deployment_failed_with_traceback(slipway_up, tmp_path):
    broken = _package(tmp_path, "broken", "name: broken\nkind: custom\n",
                      "class Model:\n    def load(self):\n        raise RuntimeError('weights are corrupt: xyz123')\n"
                      "    def predict(self, request):\n        return request\n")
    result = slipway_up.cli("deploy", broken, "--promote", check=False)
    error = _one_line_error(result)
    assert "failed" in error
    with slipway_up.http() as http:
        deployment = http.get("/api/v1/models/broken").json()["deployments"][0]
        assert deployment["status"] == "failed"
        # Not restarted over and over: the replica stays failed.
        time.sleep(2)
        replicas = http.get(f"/api/v1/deployments/{deployment['id']}/replicas").json()["data"]
        assert len(replicas) == 1 and replicas[0]["state"] == "failed"
    logs = slipway_up.cli("logs", "broken").stdout
    assert "Traceback" in logs and "weights are corrupt: xyz123" in logs


def test_bad_requests_get_openai_errors(slipway_up):
    slipway_up.cli("deploy", str(EXAMPLES / "echo"), "--promote")
    key = slipway_up.cli("keys", "create", "--scope", "invoke").stdout.strip().splitlines()[-1]
    key_id = [k for k in slipway_up.http().get("/api/v1/keys").json()["data"] if key.startswith(k["prefix"])][0]["id"]
    with slipway_up.http(key) as http:
        def expect(response: httpx.Response, status: int, words: str) -> None:
            assert response.status_code == status, response.text
            error = response.json()["error"]
            assert set(error) >= {"message", "type", "code"}
            assert words in error["message"].lower(), error
            assert response.headers.get("x-request-id")

        expect(http.post("/models/echo/predict", content=b"{not json", headers={"Content-Type": "application/json"}),
               400, "json")
        expect(http.post("/v1/embeddings", content=b"[", headers={"Content-Type": "application/json"}), 400, "json")
        expect(http.post("/models/echo/predict", content=b"x" * (10 * 1024 * 1024 + 1)), 413, "")
        expect(http.post("/models/nope/predict", json={}), 404, "nope")
        expect(http.post("/v1/embeddings", json={"model": "nope", "input": "x"}), 404, "nope")
        assert http.post("/models/echo/predict", json={"text": "ok"}).status_code == 200

        assert slipway_up.http().delete(f"/api/v1/keys/{key_id}").status_code == 200
        expect(http.post("/models/echo/predict", json={"text": "ok"}), 401, "")
    with httpx.Client(base_url=slipway_up.url) as anonymous:
        response = anonymous.post("/models/echo/predict", json={})
        assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
