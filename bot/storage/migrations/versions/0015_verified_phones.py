"""Verified phones: the number each person verified with a D7 Verify code, the code open, wrong tries and blocks
(issue 29).

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.storage.schema import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "phone_verifications",
        sa.Column("user_id", sa.String(32), primary_key=True),
        sa.Column("phone", sa.String(32)),
        sa.Column("verified_at", UTCDateTime()),
        sa.Column("otp_id", sa.String(64)),
        sa.Column("otp_phone", sa.String(32)),
        sa.Column("otp_sent_at", UTCDateTime()),
        sa.Column("otp_expires_at", UTCDateTime()),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("blocked_until", UTCDateTime()),
        sa.Column("reminded_at", UTCDateTime()),
    )


def downgrade() -> None:
    op.drop_table("phone_verifications")
