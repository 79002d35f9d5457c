"""Workflow steps: the function_execution_id of the "Send a text with D7" step a send came from; alerts'
identities (what a resolving post is matched on), indexed.

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
        batch.add_column(sa.Column("identity", sa.String(40)))
    op.create_index("ix_sends_identity", "sends", ["identity"])


def downgrade() -> None:
    op.drop_index("ix_sends_identity", "sends")
    with op.batch_alter_table("sends") as batch:
        batch.drop_column("identity")
        batch.drop_column("step")
