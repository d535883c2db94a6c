"""The learning loop as the control plane sees it: datasets, base models, creating and cancelling jobs.

Building dataset files is work of `slipway.train`, which the control plane may not import, so the
routes reach it through `DatasetFiles`, an object the composition root (`slipway.app`) builds
from `slipway.train.catalog.DatasetCatalog` and hands to `create_control_app` inside
`LearningServices`:

    routes/datasets.py ──► LearningServices.datasets (DatasetFiles) ──► train: validate, split, write
    routes/fine_tuning.py ──► create_job / cancel_job (here) ──► store ──► LearningServices.wake_jobs()
                                                                           └─► JobSupervisor (jobs.py)

A base model is a model of the workspace whose production (else development) deployment is an
`llm` package; `base_deployment` finds it. Turning that deployment's weights into a Hugging Face
folder is left to the job supervisor, which is given a resolver for it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Callable, Protocol

from slipway.errors import ConflictError, NotFoundError, SpecError
from slipway.spec.fine_tuning import FineTuningJobCreate
from slipway.store import DatasetRow, DeploymentRow, FineTuningJobRow, Store, TraceFilter

# Environments whose deployment a bare model name means, in order (as the gateway resolves it).
BASE_ENVIRONMENTS = ("production", "development")


class InvalidParamError(SpecError):
    """A request field is wrong; `param` names it, as in OpenAI's error shape."""

    def __init__(self, message: str, *, param: str, code: str = "invalid_request") -> None:
        super().__init__(message, code=code)
        self.param = param


class DatasetFiles(Protocol):
    """Builds and removes dataset folders ($SLIPWAY_HOME/datasets/<id>/) and their rows in the store.

    Each `from_*` validates everything before writing anything: a bad input raises `SpecError`
    (listing every bad line by number) and leaves neither a folder nor a row. Both return the new
    row and the warnings (rows that train but look like mistakes), one line each.
    """

    def from_jsonl(self, workspace_id: str, data: bytes, *, name: str, validation_fraction: float,
                   seed: int) -> tuple[DatasetRow, list[str]]: ...

    def from_traces(self, workspace_id: str, where: TraceFilter, *, name: str, validation_fraction: float,
                    seed: int) -> tuple[DatasetRow, list[str]]: ...

    def delete(self, workspace_id: str, dataset_id: str) -> DatasetRow | None: ...


@dataclass(frozen=True)
class LearningServices:
    """What the learning-loop routes need from outside the control package."""

    datasets: DatasetFiles | None = None
    """Dataset file work; None answers dataset uploads with 503."""
    wake_jobs: Callable[[], None] = field(default=lambda: None)
    """Asks the job supervisor for a tick now (after a job is created or cancelled)."""


# ---- base models --------------------------------------------------------------------------------

def base_deployment(store: Store, workspace_id: str, name: str) -> DeploymentRow | None:
    """The llm deployment the model `name` trains from, or None if it has none."""
    model = store.models.get(workspace_id, name)
    if model is None:
        return None
    environments = {e.name: e for e in store.environments.list(model.id)}
    candidates = [environments[n].deployment_id for n in BASE_ENVIRONMENTS if n in environments]
    # A deployment still waiting to take over has its weights already: it can be trained from.
    candidates += [environments[n].pending_deployment_id for n in BASE_ENVIRONMENTS if n in environments]
    for deployment_id in candidates:
        if deployment_id is None:
            continue
        deployment = store.deployments.get(deployment_id, workspace_id=workspace_id)
        if deployment is not None and deployment.spec.get("kind") == "llm" and deployment.spec.get("weights"):
            return deployment
    return None


def base_model_names(store: Store, workspace_id: str) -> list[str]:
    """Every model of the workspace that a job can fine-tune, by name."""
    return [m.name for m in store.models.list(workspace_id) if base_deployment(store, workspace_id, m.name)]


def check_base_model(store: Store, workspace_id: str, name: str) -> DeploymentRow:
    deployment = base_deployment(store, workspace_id, name)
    if deployment is not None:
        return deployment
    available = base_model_names(store, workspace_id)
    which = (f"models you can fine-tune: {', '.join(available)}" if available else
             "no model of this workspace can be fine-tuned yet: deploy an llm package first "
             "(slipway deploy PATH --promote)")
    raise InvalidParamError(f"model {name!r} is not a base model that can be fine-tuned here (a model whose "
                            f"production or development deployment is an llm package); {which}",
                            param="model", code="model_not_found")


# ---- jobs ---------------------------------------------------------------------------------------

def create_job(store: Store, workspace_id: str, request: FineTuningJobCreate, now: float) -> FineTuningJobRow:
    """Check the request against the store and insert the job as validating_files; the supervisor takes it on."""
    check_base_model(store, workspace_id, request.model)
    training = _dataset(store, workspace_id, request.training_file, "training_file")
    if training.train_rows < 1:
        raise InvalidParamError(f"dataset {training.id} has no training rows; upload a dataset with at least "
                                "one chat example", param="training_file", code="invalid_training_file")
    if request.validation_file is not None:
        _dataset(store, workspace_id, request.validation_file, "validation_file")
    hyperparameters = request.chosen_hyperparameters().model_dump(mode="json")
    seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
    return store.fine_tuning.create_job(workspace_id, model=request.model, training_file=training.id,
                                        validation_file=request.validation_file, hyperparameters=hyperparameters,
                                        seed=seed, suffix=request.suffix, now=now)


def get_job(store: Store, workspace_id: str, job_id: str) -> FineTuningJobRow:
    job = store.fine_tuning.get_job(workspace_id, job_id)
    if job is None:
        raise NotFoundError(f"fine-tuning job {job_id!r} not found; GET /api/v1/fine_tuning/jobs lists your jobs")
    return job


def cancel_job(store: Store, workspace_id: str, job_id: str, now: float) -> FineTuningJobRow:
    """Mark the job cancelled (its process, if any, is stopped by the supervisor); 409 once it has finished."""
    job = get_job(store, workspace_id, job_id)
    cancelled = store.fine_tuning.transition(job.id, "cancelled", now)
    if cancelled is None:
        current = get_job(store, workspace_id, job_id)
        raise ConflictError(f"fine-tuning job {job_id} has already {current.status}; only a job that is "
                            "validating_files, queued or running can be cancelled")
    return cancelled


def jobs_using_dataset(store: Store, workspace_id: str, dataset_id: str) -> list[str]:
    """Ids of the workspace's unfinished jobs that train or validate on the dataset."""
    return [j.id for j in store.fine_tuning.list_unfinished()
            if j.workspace_id == workspace_id and dataset_id in (j.training_file, j.validation_file)]


def _dataset(store: Store, workspace_id: str, dataset_id: str, param: str) -> DatasetRow:
    dataset = store.datasets.get(workspace_id, dataset_id)
    if dataset is None:
        raise InvalidParamError(f"{param} {dataset_id!r} is not a dataset of this workspace; upload one with "
                                "POST /api/v1/datasets (or `slipway datasets create FILE`) and pass its id",
                                param=param, code=f"invalid_{param}")
    return dataset
