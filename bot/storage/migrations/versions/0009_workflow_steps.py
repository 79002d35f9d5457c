"""Workflow steps: the function_execution_id of the "Send a text with D7" step a send came from.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sends") as batch:
        batch.add_column(sa.Column("step", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("sends") as batch:
        batch.drop_column("step")
