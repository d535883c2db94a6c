"""Fine-tuning shapes: one definition of the job spec, OpenAI's request and objects, fine-tuned model names."""

from __future__ import annotations

import pytest
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint
from pydantic import ValidationError

from slipway.spec import fine_tuning as spec
from slipway.spec.fine_tuning import (
    FineTuningCheckpointObject,
    FineTuningEventObject,
    FineTuningJobCreate,
    FineTuningJobObject,
    Hyperparameters,
    JobSpec,
    fine_tuned_model_name,
)


def test_the_job_process_reads_the_same_spec_and_exit_codes():
    from slipway.train import job, worker

    assert job.JobSpec is JobSpec and job.Hyperparameters is Hyperparameters
    assert (job.EVENTS_FILE, job.RESULT_FILE, job.ERROR_FILE, job.CHECKPOINTS_DIR) == (
        spec.EVENTS_FILE, spec.RESULT_FILE, spec.ERROR_FILE, spec.CHECKPOINTS_DIR)
    assert (worker.EXIT_OK, worker.EXIT_FAILED, worker.EXIT_STOPPED) == (
        spec.JOB_EXIT_SUCCEEDED, spec.JOB_EXIT_FAILED, spec.JOB_EXIT_STOPPED)


def test_fine_tuned_model_names():
    assert fine_tuned_model_name("tiny", "ftjob-0123abcd", "support") == "tiny:ft-support"
    assert fine_tuned_model_name("tiny", "ftjob-0123abcd") == "tiny:ft-0123abcd"
    longest = fine_tuned_model_name("m" * 63, "ftjob-" + "f" * 24, "s" * 32)
    assert len(longest) <= 100  # the models table's name column


def test_create_request_as_openai_sends_it():
    request = FineTuningJobCreate.model_validate({
        "model": "tiny", "training_file": "ds-1", "suffix": "arith", "seed": 4,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": "auto"}}}})
    assert request.chosen_hyperparameters() == Hyperparameters(n_epochs=2)
    assert FineTuningJobCreate(model="m", training_file="ds-1").chosen_hyperparameters() == Hyperparameters()


@pytest.mark.parametrize("extra, words", [
    ({"suffix": "x" * 33}, "suffix"),
    ({"suffix": "UPPER"}, "suffix"),
    ({"seed": -1}, "seed"),
    ({"method": {"type": "reinforcement"}}, "method.type"),
    ({"integrations": [{"type": "wandb"}]}, "integrations are not offered"),
    ({"hyperparameters": {}, "method": {"type": "supervised", "supervised": {"hyperparameters": {}}}}, "not both"),
    ({"temperature": 1}, "temperature"),
])
def test_create_request_refuses(extra, words):
    with pytest.raises(ValidationError) as caught:
        FineTuningJobCreate.model_validate({"model": "m", "training_file": "ds-1", **extra})
    assert words in str(caught.value)


def test_objects_validate_as_the_openai_client_types():
    job = FineTuningJobObject(id="ftjob-1", created_at=1, hyperparameters=Hyperparameters().model_dump(), model="m",
                              organization_id="ws-1", seed=0, status="failed", training_file="ds-1",
                              error={"code": "invalid_base_model", "message": "no", "param": "model"},
                              method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}})
    parsed = FineTuningJob.model_validate(job.model_dump())
    assert parsed.error.param == "model" and parsed.hyperparameters.n_epochs == "auto"
    event = FineTuningEventObject(id="ftevent-1", created_at=1, level="warn", message="m", type="metrics",
                                  data={"step": 1})
    assert FineTuningJobEvent.model_validate(event.model_dump()).level == "warn"
    checkpoint = FineTuningCheckpointObject(id="ftckpt-1", created_at=1, fine_tuning_job_id="ftjob-1",
                                            fine_tuned_model_checkpoint="m:ft-x:ckpt-step-2",
                                            metrics={"step": 2, "train_loss": 0.5}, step_number=2)
    assert FineTuningJobCheckpoint.model_validate(checkpoint.model_dump()).metrics.train_loss == 0.5


def test_job_spec_keeps_refusing_unknown_fields():
    with pytest.raises(ValidationError, match="extra"):
        JobSpec(base_model="/m", training_file="t.jsonl", learning_rate=1)
