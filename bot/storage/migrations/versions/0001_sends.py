"""The sends table: every intent, its checks, its outcome and whether Slack was told.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.storage.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sends",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("idempotency_key", sa.String(255), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("surface", sa.String(16), nullable=False),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("response_url", sa.Text()),
        sa.Column("origin_thread_ts", sa.String(32)),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("requested_sender", sa.String(64)),
        sa.Column("refs", sa.JSON(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("schedule_time", UTCDateTime()),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("deadline_at", UTCDateTime(), nullable=False),
        sa.Column("claimed_by", sa.String(64)),
        sa.Column("lease_until", UTCDateTime()),
        sa.Column("rule", sa.String(120)),
        sa.Column("sender", sa.String(64)),
        sa.Column("originator", sa.String(64)),
        sa.Column("recipients", sa.JSON()),
        sa.Column("names", sa.JSON()),
        sa.Column("encoding", sa.String(16)),
        sa.Column("segments", sa.Integer()),
        sa.Column("refusal_kind", sa.String(16)),
        sa.Column("problems", sa.JSON()),
        sa.Column("thread_ts", sa.String(32)),
        sa.Column("private", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("retry_notice_posted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("posted_at", UTCDateTime()),
        sa.Column("request_id", sa.String(128)),
        sa.Column("http_status", sa.Integer()),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_message", sa.Text()),
        sa.Column("finished_at", UTCDateTime()),
    )
    op.create_index("ix_sends_due", "sends", ["state", "next_attempt_at"])
    op.create_index("ix_sends_request_id", "sends", ["request_id"])
    op.create_index("ix_sends_created_at", "sends", ["created_at"])


def downgrade() -> None:
    op.drop_table("sends")
