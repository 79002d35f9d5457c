"""On call: overrides taken or given from Slack, and who was on call for a send's schedules (issue 29).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.storage.schema import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oncall_overrides",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("schedule", sa.String(80), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("starts_at", UTCDateTime(), nullable=False),
        sa.Column("ends_at", UTCDateTime(), nullable=False),
        sa.Column("by", sa.String(32), nullable=False),
    )
    op.create_index("ix_oncall_overrides_schedule_ends", "oncall_overrides", ["schedule", "ends_at"])
    with op.batch_alter_table("sends") as batch:
        batch.add_column(sa.Column("on_call", sa.JSON()))


def downgrade() -> None:
    with op.batch_alter_table("sends") as batch:
        batch.drop_column("on_call")
    op.drop_index("ix_oncall_overrides_schedule_ends", "oncall_overrides")
    op.drop_table("oncall_overrides")
