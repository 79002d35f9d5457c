"""Inbound: every message a phone sends back (kept as it came, with what was done about it), and the opt-out list.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.storage.schema import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbound",
        sa.Column("id", sa.String(36), primary_key=True),
        # The body's digest while it may be a duplicate (set to NULL once the window passed, or for a duplicate).
        sa.Column("dedupe_key", sa.String(64), unique=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("phone", sa.String(32)),
        sa.Column("text", sa.Text()),
        sa.Column("send_id", sa.String(36)),  # the send it answers (a reply in its thread)
        sa.Column("note_ts", sa.String(32)),  # the bot's message about it in Slack
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime()),  # NULL once handled
        sa.Column("lease_until", UTCDateTime()),
    )
    op.create_index("ix_inbound_due", "inbound", ["next_attempt_at"])
    op.create_index("ix_inbound_received_at", "inbound", ["received_at"])
    op.create_index("ix_inbound_send_id", "inbound", ["send_id"])
    op.create_table(
        "opt_outs",
        sa.Column("phone", sa.String(32), primary_key=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("way", sa.String(16), nullable=False),  # text (STOP) or admin (/sms optout)
        sa.Column("by", sa.String(64)),  # the admin's user ID, or the stop word texted
    )


def downgrade() -> None:
    op.drop_table("opt_outs")
    op.drop_index("ix_inbound_send_id", table_name="inbound")
    op.drop_index("ix_inbound_received_at", table_name="inbound")
    op.drop_index("ix_inbound_due", table_name="inbound")
    op.drop_table("inbound")
