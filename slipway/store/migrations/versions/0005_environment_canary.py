"""A canary per environment.

`environments.canary_deployment_id` (nullable, set to null when that deployment is deleted, like
`deployment_id`) is a second deployment of the same model that receives
`environments.canary_percent` (1-99) percent of the environment's requests; the rest go to the
environment's deployment. Both are null for every existing environment: no canary.

Revision ID: 0005
Revises: 0004
Create Date: 2025-03-15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.add_column(sa.Column("canary_deployment_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("canary_percent", sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f("fk_environments_canary_deployment_id_deployments"), "deployments",
                                 ["canary_deployment_id"], ["id"], ondelete="SET NULL")


def downgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.drop_constraint(op.f("fk_environments_canary_deployment_id_deployments"), type_="foreignkey")
        batch.drop_column("canary_percent")
        batch.drop_column("canary_deployment_id")
