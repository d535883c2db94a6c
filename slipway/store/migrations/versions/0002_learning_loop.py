"""The learning loop: traces, datasets, fine-tuning jobs (events, checkpoints), eval suites, runs, results.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _workspace_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE",
                                   name=op.f(f"fk_{table}_workspace_id_workspaces"))


def upgrade() -> None:
    op.create_table(
        "traces",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("workspace_id", sa.String(40), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("environment", sa.String(100), nullable=True),
        sa.Column("deployment_id", sa.String(40), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("feedback_score", sa.Float(), nullable=True),
        sa.Column("feedback_label", sa.String(100), nullable=True),
        sa.Column("corrected_output", sa.Text(), nullable=True),
        sa.Column("feedback_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_traces")),
    )
    op.create_index(op.f("ix_traces_workspace_id_created_at"), "traces", ["workspace_id", "created_at"])

    op.create_table(
        "datasets",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("workspace_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("filters", sa.JSON(), nullable=True),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("train_rows", sa.Integer(), nullable=False),
        sa.Column("validation_rows", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        _workspace_fk("datasets"),
    )
    op.create_index(op.f("ix_datasets_workspace_id_created_at"), "datasets", ["workspace_id", "created_at"])

    op.create_table(
        "fine_tuning_jobs",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("workspace_id", sa.String(40), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("training_file", sa.String(40), nullable=False),
        sa.Column("validation_file", sa.String(40), nullable=True),
        sa.Column("hyperparameters", sa.JSON(), nullable=False),
        sa.Column("suffix", sa.String(64), nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("fine_tuned_model", sa.String(200), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("trained_tokens", sa.BigInteger(), nullable=True),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("job_dir", sa.Text(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fine_tuning_jobs")),
        _workspace_fk("fine_tuning_jobs"),
    )
    op.create_index(op.f("ix_fine_tuning_jobs_workspace_id_created_at"), "fine_tuning_jobs",
                    ["workspace_id", "created_at"])
    op.create_index(op.f("ix_fine_tuning_jobs_status"), "fine_tuning_jobs", ["status"])

    op.create_table(
        "fine_tuning_events",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fine_tuning_events")),
        sa.ForeignKeyConstraint(["job_id"], ["fine_tuning_jobs.id"], ondelete="CASCADE",
                                name=op.f("fk_fine_tuning_events_job_id_fine_tuning_jobs")),
        sa.UniqueConstraint("job_id", "seq", name=op.f("uq_fine_tuning_events_job_id_seq")),
    )

    op.create_table(
        "fine_tuning_checkpoints",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fine_tuning_checkpoints")),
        sa.ForeignKeyConstraint(["job_id"], ["fine_tuning_jobs.id"], ondelete="CASCADE",
                                name=op.f("fk_fine_tuning_checkpoints_job_id_fine_tuning_jobs")),
        sa.UniqueConstraint("job_id", "step", name=op.f("uq_fine_tuning_checkpoints_job_id_step")),
    )

    op.create_table(
        "eval_suites",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("workspace_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("items_path", sa.Text(), nullable=False),
        sa.Column("items_hash", sa.String(64), nullable=False),
        sa.Column("num_items", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eval_suites")),
        _workspace_fk("eval_suites"),
        sa.UniqueConstraint("workspace_id", "name", name=op.f("uq_eval_suites_workspace_id_name")),
    )

    op.create_table(
        "eval_runs",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("workspace_id", sa.String(40), nullable=False),
        sa.Column("suite_id", sa.String(40), nullable=False),
        sa.Column("target_kind", sa.String(16), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("job_dir", sa.Text(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eval_runs")),
        _workspace_fk("eval_runs"),
        sa.ForeignKeyConstraint(["suite_id"], ["eval_suites.id"], ondelete="CASCADE",
                                name=op.f("fk_eval_runs_suite_id_eval_suites")),
    )
    op.create_index(op.f("ix_eval_runs_workspace_id_created_at"), "eval_runs", ["workspace_id", "created_at"])
    op.create_index(op.f("ix_eval_runs_suite_id"), "eval_runs", ["suite_id"])

    op.create_table(
        "eval_results",
        sa.Column("id", _BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("item_index", sa.Integer(), nullable=False),
        sa.Column("sample", sa.JSON(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("rationale", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eval_results")),
        sa.ForeignKeyConstraint(["run_id"], ["eval_runs.id"], ondelete="CASCADE",
                                name=op.f("fk_eval_results_run_id_eval_runs")),
        sa.UniqueConstraint("run_id", "item_index", name=op.f("uq_eval_results_run_id_item_index")),
    )


def downgrade() -> None:
    for table in ("eval_results", "eval_runs", "eval_suites", "fine_tuning_checkpoints", "fine_tuning_events",
                  "fine_tuning_jobs", "datasets", "traces"):
        op.drop_table(table)
