"""Prices per deployment and a deployment's recent errors.

`deployments.pricing` (JSON, null for none) is what the usage API turns into cost; the usage index
on (deployment_id, status_code, created_at) finds a deployment's failed requests without reading
its successful ones.

Revision ID: 0003
Revises: 0002
Create Date: 2025-02-15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("pricing", sa.JSON(), nullable=True))
    op.create_index(op.f("ix_usage_deployment_id_status_code_created_at"), "usage",
                    ["deployment_id", "status_code", "created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_usage_deployment_id_status_code_created_at"), table_name="usage")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("pricing")
