"""Alert forwarding: the alert on each send, dedup leaders, per-phone windows and what each alert did per phone.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.storage.schema import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sends") as batch:
        batch.add_column(sa.Column("alert", sa.JSON()))
        batch.add_column(sa.Column("fingerprint", sa.String(40)))
        batch.add_column(sa.Column("sent_text", sa.Text()))
        batch.add_column(sa.Column("duplicate_of", sa.String(36)))
        batch.add_column(sa.Column("held", sa.JSON()))
        batch.create_index("ix_sends_fingerprint", ["fingerprint"])
    op.create_table(
        "alert_dedupe",
        sa.Column("fingerprint", sa.String(40), primary_key=True),
        sa.Column("leader_id", sa.String(36), nullable=False),
        sa.Column("until", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "alert_windows",
        sa.Column("rule", sa.String(120), primary_key=True),
        sa.Column("phone", sa.String(20), primary_key=True),
        sa.Column("window_start", UTCDateTime(), nullable=False),
        sa.Column("window_end", UTCDateTime(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("last_held", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "alert_deliveries",
        sa.Column("send_id", sa.String(36), primary_key=True),
        sa.Column("phone", sa.String(20), primary_key=True),
        sa.Column("rule", sa.String(120), nullable=False),
        sa.Column("window_start", UTCDateTime(), nullable=False),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_alert_deliveries_window", "alert_deliveries", ["rule", "phone", "window_start"])


def downgrade() -> None:
    op.drop_table("alert_deliveries")
    op.drop_table("alert_windows")
    op.drop_table("alert_dedupe")
    with op.batch_alter_table("sends") as batch:
        batch.drop_index("ix_sends_fingerprint")
        for column in ("held", "duplicate_of", "sent_text", "fingerprint", "alert"):
            batch.drop_column(column)
