"""Capture per environment.

`environments.capture` (boolean, false for every existing environment): the gateway stores
request/response traces of an environment's traffic when it is set, or when the serving
deployment's package says `capture: true`.

Revision ID: 0004
Revises: 0003
Create Date: 2025-03-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.add_column(sa.Column("capture", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.drop_column("capture")
