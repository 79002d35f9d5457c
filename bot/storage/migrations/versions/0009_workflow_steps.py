"""Workflow steps: the function_execution_id of the "Send a text with D7" step a send came from; alerts'
identities (what a resolving post is matched on), indexed; who acknowledged an alert and when it was resolved.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.storage.schema import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sends") as batch:
        batch.add_column(sa.Column("step", sa.String(64)))
        batch.add_column(sa.Column("identity", sa.String(40)))
        batch.add_column(sa.Column("acked_by", sa.String(32)))
        batch.add_column(sa.Column("acked_at", UTCDateTime()))
        batch.add_column(sa.Column("resolved_at", UTCDateTime()))
    op.create_index("ix_sends_identity", "sends", ["identity"])


def downgrade() -> None:
    op.drop_index("ix_sends_identity", "sends")
    with op.batch_alter_table("sends") as batch:
        batch.drop_column("resolved_at")
        batch.drop_column("acked_at")
        batch.drop_column("acked_by")
        batch.drop_column("identity")
        batch.drop_column("step")
