"""On call: each person's stint on a schedule noticed once (the handoff DM and the user group set), shared by every
replica (issue 29).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.storage.schema import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oncall_handoffs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("schedule", sa.String(80), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("starts_at", UTCDateTime(), nullable=False),
        sa.Column("ends_at", UTCDateTime(), nullable=False),
        sa.Column("noticed_at", UTCDateTime()),
        sa.Column("group_set_at", UTCDateTime()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("claimed_until", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("schedule", "user_id", "ends_at", name="uq_oncall_handoffs_stint"),
    )
    op.create_index("ix_oncall_handoffs_ends", "oncall_handoffs", ["ends_at"])


def downgrade() -> None:
    op.drop_index("ix_oncall_handoffs_ends", "oncall_handoffs")
    op.drop_table("oncall_handoffs")
