"""Fine-tuning job routes in OpenAI's shape, checked with the official openai client against a real server."""

from __future__ import annotations

import openai
import pytest

from slipway.control import create_control_app

from .learning import (  # noqa: F401
    ServerThread, chat_row, learning, learning_api, llm_package, other_key, upload, wakes,
)


@pytest.fixture
def ready(learning_api):
    """An llm model `tiny`, a custom model `echo`, and a dataset; returns the dataset id."""
    assert learning_api.deploy(llm_package("tiny", "/models/tiny"), promote="true").status_code == 201
    assert learning_api.deploy().status_code == 201
    return upload(learning_api, [chat_row(i) for i in range(10)], name="arith").json()["id"]


def _create(api, key="admin", **body):
    return api.post("/api/v1/fine_tuning/jobs", json=body, key=key)


def test_create_retrieve_list_cancel(learning_api, ready, wakes):
    response = _create(learning_api, model="tiny", training_file=ready, suffix="arith", seed=7,
                       hyperparameters={"n_epochs": 2, "lora_rank": 4})
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["object"] == "fine_tuning.job" and job["id"].startswith("ftjob-")
    assert (job["status"], job["model"], job["training_file"], job["seed"], job["suffix"]) == (
        "validating_files", "tiny", ready, 7, "arith")
    assert job["hyperparameters"]["n_epochs"] == 2 and job["hyperparameters"]["batch_size"] == "auto"
    assert job["method"] == {"type": "supervised", "supervised": {"hyperparameters": job["hyperparameters"]}}
    assert job["fine_tuned_model"] is None and job["error"] is None and job["result_files"] == []
    assert wakes.count == 1
    assert learning_api.get(f"/api/v1/fine_tuning/jobs/{job['id']}").json() == job

    second = _create(learning_api, model="tiny", training_file=ready).json()
    assert isinstance(second["seed"], int)
    page = learning_api.get("/api/v1/fine_tuning/jobs", params={"limit": 1}).json()
    assert [j["id"] for j in page["data"]] == [second["id"]] and page["has_more"] is True
    rest = learning_api.get("/api/v1/fine_tuning/jobs", params={"after": second["id"]}).json()
    assert [j["id"] for j in rest["data"]] == [job["id"]] and rest["has_more"] is False

    cancelled = learning_api.post(f"/api/v1/fine_tuning/jobs/{job['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None and wakes.count == 3
    again = learning_api.post(f"/api/v1/fine_tuning/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["error"]["message"]
    events = learning_api.get(f"/api/v1/fine_tuning/jobs/{job['id']}/events").json()
    checkpoints = learning_api.get(f"/api/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()
    assert events == {"object": "list", "data": [], "has_more": False}
    assert checkpoints["data"] == [] and checkpoints["has_more"] is False


def test_an_unknown_base_model_fails_fast_naming_the_models_that_exist(learning_api, ready):
    for model in ("gpt-4o", "echo"):  # echo exists but is a custom package
        response = _create(learning_api, model=model, training_file=ready)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == "model" and error["code"] == "model_not_found"
        assert f"model {model!r} is not a base model" in error["message"]
        assert "models you can fine-tune: tiny" in error["message"]
    assert learning_api.get("/api/v1/fine_tuning/jobs").json()["data"] == []


def test_with_no_llm_model_the_error_says_to_deploy_one(learning_api):
    dataset_id = upload(learning_api, [chat_row(1)]).json()["id"]
    error = _create(learning_api, model="tiny", training_file=dataset_id).json()["error"]
    assert "deploy an llm package first" in error["message"]


@pytest.mark.parametrize("body, param, words", [
    ({"training_file": "ds-missing"}, "training_file", "not a dataset of this workspace"),
    ({"validation_file": "ds-missing"}, "validation_file", "not a dataset of this workspace"),
])
def test_unknown_datasets_are_refused_with_their_param(learning_api, ready, body, param, words):
    response = _create(learning_api, **{"model": "tiny", "training_file": ready, **body})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param and words in response.json()["error"]["message"]


@pytest.mark.parametrize("body, words", [
    ({"hyperparameters": {"n_epochs": 0}}, "n_epochs"),
    ({"hyperparameters": {"learning_rate": 0.1}}, "learning_rate"),
    ({"suffix": "Has Spaces"}, "suffix"),
    ({"method": {"type": "dpo"}}, "method.type"),
    ({"hyperparameters": {"n_epochs": 1}, "method": {"type": "supervised", "supervised": {"hyperparameters": {}}}},
     "not both"),
    ({"metadata": {"team": "a"}}, "metadata is not offered"),
])
def test_bad_requests_say_what_is_wrong(learning_api, ready, body, words):
    response = _create(learning_api, **{"model": "tiny", "training_file": ready, **body})
    assert response.status_code == 400 and words in response.json()["error"]["message"], response.text


def test_hyperparameters_may_come_in_openai_method(learning_api, ready):
    job = _create(learning_api, model="tiny", training_file=ready,
                  method={"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 4}}}).json()
    assert job["hyperparameters"]["batch_size"] == 4


def test_another_workspace_gets_404_on_every_job_route(learning_api, ready, other_key):
    job_id = _create(learning_api, model="tiny", training_file=ready).json()["id"]
    for method, path in [("GET", f"/api/v1/fine_tuning/jobs/{job_id}"),
                         ("POST", f"/api/v1/fine_tuning/jobs/{job_id}/cancel"),
                         ("GET", f"/api/v1/fine_tuning/jobs/{job_id}/events"),
                         ("GET", f"/api/v1/fine_tuning/jobs/{job_id}/checkpoints")]:
        response = learning_api.request(method, path, key=other_key)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["code"] == "not_found"
    assert learning_api.get("/api/v1/fine_tuning/jobs", key=other_key).json()["data"] == []
    # Their datasets and models are not ours either.
    foreign = _create(learning_api, model="tiny", training_file=ready, key=other_key)
    assert foreign.status_code == 400 and foreign.json()["error"]["param"] == "model"
    assert learning_api.get(f"/api/v1/fine_tuning/jobs/{job_id}").json()["status"] == "validating_files"


def test_the_openai_client_drives_the_job_routes(plane, learning, ready):
    with ServerThread(create_control_app(plane, learning=learning)) as server:
        client = openai.OpenAI(base_url=f"{server.url}/api/v1", api_key=_admin_key(plane), max_retries=0)
        job = client.fine_tuning.jobs.create(model="tiny", training_file=ready, suffix="demo", seed=3,
                                             hyperparameters={"n_epochs": 1, "batch_size": 2})
        assert job.status == "validating_files" and job.seed == 3 and job.hyperparameters.n_epochs == 1
        assert job.organization_id == plane.system_workspace_id
        other = client.fine_tuning.jobs.create(
            model="tiny", training_file=ready,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}})
        assert other.method.supervised.hyperparameters.n_epochs == 2
        assert client.fine_tuning.jobs.retrieve(job.id).id == job.id
        listed = client.fine_tuning.jobs.list(limit=1)
        assert [j.id for j in listed.data] == [other.id] and listed.has_more is True
        assert [j.id for j in client.fine_tuning.jobs.list(limit=1)] == [other.id, job.id]  # auto-paging
        assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
        assert list(client.fine_tuning.jobs.list_events(job.id)) == []
        assert list(client.fine_tuning.jobs.checkpoints.list(job.id)) == []
        with pytest.raises(openai.BadRequestError) as caught:
            client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=ready)
        assert caught.value.param == "model" and "tiny" in caught.value.message
        with pytest.raises(openai.NotFoundError):
            client.fine_tuning.jobs.retrieve("ftjob-missing")
        with pytest.raises(openai.ConflictError):
            client.fine_tuning.jobs.cancel(job.id)


def _admin_key(plane) -> str:
    from slipway.control.keys import ADMIN_KEY_FILE

    return (plane.home / ADMIN_KEY_FILE).read_text().strip()
