"""Workflow runs: the workflow_execution_id of the run whose step a send came from, so the channel is told which
workflow sent it (the step's person is the one who ran it, not its author).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sends") as batch:
        batch.add_column(sa.Column("workflow", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("sends") as batch:
        batch.drop_column("workflow")
