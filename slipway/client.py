"""The Python SDK: `slipway.Client`, a thin typed wrapper over the management API and gateway.

    client = slipway.Client()                       # SLIPWAY_URL / SLIPWAY_API_KEY or ~/.slipway/admin.key
    deployment = client.deploy("examples/minilm", promote=True)
    client.wait_ready(deployment["id"])
    client.predict("echo", {"text": "hi"})

Errors from the server come back as `slipway.errors` exceptions carrying the server's message.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import time
from pathlib import Path
from typing import Any, Iterator

import httpx

from slipway.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    SlipwayError,
    SpecError,
    UpstreamError,
)

DEFAULT_URL = "http://127.0.0.1:8000"
# Files and folders never shipped in a package snapshot.
_SKIP_NAMES = {"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache", ".DS_Store"}


def slipway_home() -> Path:
    return Path(os.environ.get("SLIPWAY_HOME") or Path.home() / ".slipway").expanduser()


def default_api_key() -> str | None:
    key = os.environ.get("SLIPWAY_API_KEY")
    if key:
        return key.strip()
    path = slipway_home() / "admin.key"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def pack_package(path: str | Path) -> bytes:
    """A deterministic .tar.gz of a package folder: same files, same bytes (so the same hash)."""
    root = Path(path)
    if not (root / "slipway.yaml").is_file():
        raise SpecError(f"{root}: no slipway.yaml here; point at a package folder (slipway init NAME makes one)")
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for file in sorted(root.rglob("*")):
            rel = file.relative_to(root)
            if any(part in _SKIP_NAMES or part.endswith(".pyc") for part in rel.parts):
                continue
            if file.is_symlink() or not file.is_file():
                continue
            info = tarfile.TarInfo(rel.as_posix())
            data = file.read_bytes()
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def package_digest(path: str | Path) -> str:
    return hashlib.sha256(pack_package(path)).hexdigest()


_ERRORS_BY_STATUS: dict[int, type[SlipwayError]] = {
    400: SpecError, 401: AuthError, 403: PermissionDeniedError, 404: NotFoundError, 409: ConflictError,
    413: SpecError, 422: SpecError,
}


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json().get("error", {})
        message = error.get("message") or response.text
    except ValueError:
        message = response.text or response.reason_phrase
    cls = _ERRORS_BY_STATUS.get(response.status_code, UpstreamError)
    if cls is SpecError:
        raise SpecError(message)
    raise cls(message)


def _failure_summary(deployment: dict) -> str:
    """The line of a failure detail that says what went wrong (a traceback's last line)."""
    lines = [line.strip() for line in (deployment.get("status_detail") or "").splitlines() if line.strip()]
    exception = [line for line in lines if not line.startswith(("File ", "^", "~", "{")) and ":" in line]
    return (exception or lines or ["no detail"])[-1]


class Client:
    """Talks to one slipway control plane + gateway (`slipway up` serves both on one URL)."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0) -> None:
        self.url = (url or os.environ.get("SLIPWAY_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key or default_api_key()
        if not self.api_key:
            raise AuthError(
                "no API key: set SLIPWAY_API_KEY, pass api_key=, or run `slipway up` once "
                f"(it saves the admin key to {slipway_home() / 'admin.key'})"
            )
        self._http = httpx.Client(base_url=self.url, timeout=timeout,
                                  headers={"Authorization": f"Bearer {self.api_key}"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise SlipwayError(f"cannot reach slipway at {self.url}; is `slipway up` running?") from None
        _raise_for(response)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    # Deployments -------------------------------------------------------------------------
    def deploy(self, path: str | Path, *, environment: str | None = None, promote: bool = False) -> dict:
        params: dict[str, Any] = {"promote": str(promote).lower()}
        if environment:
            params["environment"] = environment
        return self._request("POST", "/api/v1/deployments", content=pack_package(path), params=params,
                             headers={"Content-Type": "application/gzip"})

    def models(self) -> list[dict]:
        return self._request("GET", "/api/v1/models")["data"]

    def model(self, name: str) -> dict:
        return self._request("GET", f"/api/v1/models/{name}")

    def deployment(self, deployment_id: str) -> dict:
        return self._request("GET", f"/api/v1/deployments/{deployment_id}")

    def deactivate(self, deployment_id: str) -> dict:
        return self._request("DELETE", f"/api/v1/deployments/{deployment_id}")

    def replicas(self, deployment_id: str) -> list[dict]:
        return self._request("GET", f"/api/v1/deployments/{deployment_id}/replicas")["data"]

    def logs(self, deployment_id: str, *, tail: int = 200) -> dict:
        return self._request("GET", f"/api/v1/deployments/{deployment_id}/logs", params={"tail": tail})

    def scale(self, deployment_id: str, replicas: int) -> dict:
        return self._request("POST", f"/api/v1/deployments/{deployment_id}/scale", json={"replicas": replicas})

    def set_autoscaling(self, deployment_id: str, **settings: Any) -> dict:
        return self._request("PATCH", f"/api/v1/deployments/{deployment_id}/autoscaling", json=settings)

    def promote(self, model: str, *, deployment_id: str | None = None, number: int | None = None,
                environment: str = "production", canary_percent: int | None = None) -> dict:
        """Point the environment at the deployment; with `canary_percent`, make it the canary at that share.

        Promoting the environment's canary without `canary_percent` completes it.
        """
        body: dict[str, Any] = {"deployment_id": deployment_id} if deployment_id else {"number": number}
        if canary_percent is not None:
            body["canary_percent"] = canary_percent
        return self._request("POST", f"/api/v1/models/{model}/environments/{environment}/promote", json=body)

    def end_canary(self, model: str, *, environment: str = "production") -> dict:
        """End the environment's canary without promoting it: all traffic back to its deployment."""
        return self._request("DELETE", f"/api/v1/models/{model}/environments/{environment}/canary")

    def rollback(self, model: str, *, environment: str = "production") -> dict:
        return self._request("POST", f"/api/v1/models/{model}/environments/{environment}/rollback")

    def wait_ready(self, deployment_id: str, *, timeout: float = 300.0, interval: float = 0.25) -> dict:
        """Poll until the deployment is active (a replica is ready); raise if it failed or timed out."""
        deadline = time.monotonic() + timeout
        while True:
            deployment = self.deployment(deployment_id)
            if deployment["status"] == "active":
                return deployment
            if deployment["status"] == "failed":
                raise SlipwayError(f"deployment {deployment_id} failed: {_failure_summary(deployment)}; "
                                   f"`slipway logs {deployment_id}` shows the full traceback")
            if time.monotonic() > deadline:
                raise SlipwayError(f"deployment {deployment_id} not ready after {timeout:.0f}s; see slipway logs")
            time.sleep(interval)

    # Keys and usage ----------------------------------------------------------------------
    def create_key(self, *, name: str = "", scopes: list[str] | None = None, models: list[str] | None = None) -> dict:
        return self._request("POST", "/api/v1/keys",
                             json={"name": name, "scopes": scopes or ["invoke"], "models": models})

    def keys(self) -> list[dict]:
        return self._request("GET", "/api/v1/keys")["data"]

    def revoke_key(self, key_id: str) -> dict:
        return self._request("DELETE", f"/api/v1/keys/{key_id}")

    def usage(self, *, group_by: str = "model", start: str | None = None, end: str | None = None) -> list[dict]:
        params = {k: v for k, v in {"group_by": group_by, "start": start, "end": end}.items() if v}
        return self._request("GET", "/api/v1/usage", params=params)["data"]

    # Datasets, traces and fine-tuning ---------------------------------------------------
    def create_dataset(self, data: str | Path | bytes, *, name: str | None = None, validation_fraction: float = 0.1,
                       seed: int = 0) -> dict:
        """Upload chat fine-tuning JSONL (a path or the bytes); returns the dataset with any `warnings`."""
        if isinstance(data, (str, Path)):
            path = Path(data)
            if not path.is_file():
                raise SpecError(f"{path} is not a file; pass a chat fine-tuning .jsonl file")
            name = name or path.stem
            data = path.read_bytes()
        params = {"name": name or "dataset", "validation_fraction": validation_fraction, "seed": seed}
        return self._request("POST", "/api/v1/datasets", content=data, params=params,
                             headers={"Content-Type": "application/jsonl"})

    def datasets(self, *, limit: int = 100) -> list[dict]:
        return self._request("GET", "/api/v1/datasets", params={"limit": limit})["data"]

    def dataset(self, dataset_id: str) -> dict:
        return self._request("GET", f"/api/v1/datasets/{dataset_id}")

    def delete_dataset(self, dataset_id: str) -> dict:
        return self._request("DELETE", f"/api/v1/datasets/{dataset_id}")

    def traces(self, *, limit: int = 20, after: str | None = None, **filters: Any) -> dict:
        """A page of traces ({"data", "has_more"}); filters: model, environment, since, until, tag, ..."""
        params = {k: v for k, v in {"limit": limit, "after": after, **filters}.items() if v is not None}
        return self._request("GET", "/api/v1/traces", params=params)

    def give_feedback(self, trace_id: str, *, score: float | None = None, label: str | None = None,
                      corrected_output: str | None = None) -> dict:
        body = {k: v for k, v in {"score": score, "label": label, "corrected_output": corrected_output}.items()
                if v is not None}
        return self._request("POST", f"/api/v1/traces/{trace_id}/feedback", json=body)

    def create_fine_tuning_job(self, model: str, training_file: str, *, validation_file: str | None = None,
                               hyperparameters: dict[str, Any] | None = None, suffix: str | None = None,
                               seed: int | None = None) -> dict:
        body = {k: v for k, v in {"model": model, "training_file": training_file, "validation_file": validation_file,
                                  "hyperparameters": hyperparameters, "suffix": suffix, "seed": seed}.items()
                if v is not None}
        return self._request("POST", "/api/v1/fine_tuning/jobs", json=body)

    def fine_tuning_jobs(self, *, limit: int = 20) -> list[dict]:
        return self._request("GET", "/api/v1/fine_tuning/jobs", params={"limit": limit})["data"]

    def fine_tuning_job(self, job_id: str) -> dict:
        return self._request("GET", f"/api/v1/fine_tuning/jobs/{job_id}")

    def cancel_fine_tuning_job(self, job_id: str) -> dict:
        return self._request("POST", f"/api/v1/fine_tuning/jobs/{job_id}/cancel")

    def fine_tuning_events(self, job_id: str, *, limit: int = 100) -> list[dict]:
        """The job's newest events, newest first."""
        return self._request("GET", f"/api/v1/fine_tuning/jobs/{job_id}/events", params={"limit": limit})["data"]

    def fine_tuning_checkpoints(self, job_id: str) -> list[dict]:
        return self._request("GET", f"/api/v1/fine_tuning/jobs/{job_id}/checkpoints",
                             params={"limit": 100})["data"]

    # Inference -----------------------------------------------------------------------------
    def predict(self, model: str, body: Any, *, environment: str | None = None) -> Any:
        path = f"/models/{model}/environments/{environment}/predict" if environment else f"/models/{model}/predict"
        return self._request("POST", path, json=body)

    def predict_stream(self, model: str, body: Any) -> Iterator[str]:
        with self._http.stream("POST", f"/models/{model}/predict", json=body) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for(response)
            yield from response.iter_text()

    # Evals ---------------------------------------------------------------------------------
    def create_eval_suite(self, items: str | Path | list[dict], *, name: str, graders: list[dict],
                          description: str = "", sampling: dict[str, Any] | None = None) -> dict:
        """Upload a suite: items as a JSONL path, JSONL text or a list; every bad line is reported by number."""
        if isinstance(items, Path) or (isinstance(items, str) and "\n" not in items and items.endswith(".jsonl")):
            path = Path(items)
            if not path.is_file():
                raise SpecError(f"{path} is not a file; pass a JSONL file with one eval item per line")
            items = path.read_text(encoding="utf-8")
        body = {"name": name, "description": description, "items": items, "graders": graders, "sampling": sampling}
        return self._request("POST", "/api/v1/evals/suites", json=body)

    def eval_suites(self, *, limit: int = 100) -> list[dict]:
        return self._request("GET", "/api/v1/evals/suites", params={"limit": limit})["data"]

    def eval_suite(self, ref: str) -> dict:
        return self._request("GET", f"/api/v1/evals/suites/{ref}")

    def create_eval_run(self, suite: str, target: str) -> dict:
        """Queue a run; target: model, model@env, a fine-tuned model, a deployment id or model#N."""
        return self._request("POST", "/api/v1/evals/runs", json={"suite": suite, "target": target})

    def eval_runs(self, *, suite: str | None = None, limit: int = 20) -> list[dict]:
        params = {k: v for k, v in {"suite": suite, "limit": limit}.items() if v is not None}
        return self._request("GET", "/api/v1/evals/runs", params=params)["data"]

    def eval_run(self, run_id: str) -> dict:
        return self._request("GET", f"/api/v1/evals/runs/{run_id}")

    def eval_results(self, run_id: str, *, after: int = -1, limit: int = 100, failed_only: bool = False) -> dict:
        """A page of per-item results ({"data", "has_more"}) in item order."""
        return self._request("GET", f"/api/v1/evals/runs/{run_id}/results",
                             params={"after": after, "limit": limit, "failed_only": str(failed_only).lower()})

    def wait_eval_run(self, run_id: str, *, timeout: float = 3600.0, interval: float = 0.5,
                      on_progress: Any = None) -> dict:
        """Poll until the run has finished; `on_progress(run)` sees each poll. Raises if it failed."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.eval_run(run_id)
            if on_progress is not None:
                on_progress(run)
            if run["status"] == "succeeded":
                return run
            if run["status"] in ("failed", "cancelled"):
                reason = (run.get("error") or {}).get("message", "no detail")
                raise SlipwayError(f"eval run {run_id} on {run['target']} {run['status']}: {reason}")
            if time.monotonic() > deadline:
                raise SlipwayError(f"eval run {run_id} not finished after {timeout:.0f}s; "
                                   f"`slipway evals ls` shows its status")
            time.sleep(interval)

    def eval_gate(self, model: str, *, suite: str, min_score: float, candidate_run: str,
                  deployment_id: str | None = None, number: int | None = None, no_regression: bool = False,
                  baseline_run: str | None = None, environment: str = "production",
                  canary_percent: int | None = None) -> dict:
        """Promote the candidate (or with `canary_percent`, start it as the canary) only if its run passes the
        gate; ConflictError (gate_failed) otherwise."""
        body = {"model": model, "deployment_id": deployment_id, "number": number, "environment": environment,
                "suite": suite, "min_score": min_score, "no_regression": no_regression,
                "candidate_run": candidate_run, "baseline_run": baseline_run, "canary_percent": canary_percent}
        return self._request("POST", "/api/v1/evals/gates", json={k: v for k, v in body.items() if v is not None})
