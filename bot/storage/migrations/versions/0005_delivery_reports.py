"""Delivery reports: the result message to update, per-recipient statuses, and reports as received.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.storage.schema import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sends") as batch:
        batch.add_column(sa.Column("result_ts", sa.String(32)))
        batch.add_column(sa.Column("card_due_at", UTCDateTime()))
        batch.add_column(sa.Column("reconciled_at", UTCDateTime()))
        batch.add_column(sa.Column("delivery_final", sa.Boolean()))
        batch.create_index("ix_sends_card_due_at", ["card_due_at"])
    op.create_table(
        "recipient_statuses",
        sa.Column("send_id", sa.String(36), primary_key=True),
        sa.Column("recipient", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("notified", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "delivery_reports",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("report_key", sa.String(300), nullable=False, unique=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("recipient", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("applied_at", UTCDateTime()),
    )
    op.create_index("ix_delivery_reports_pending", "delivery_reports", ["applied_at", "request_id"])


def downgrade() -> None:
    op.drop_table("delivery_reports")
    op.drop_table("recipient_statuses")
    with op.batch_alter_table("sends") as batch:
        batch.drop_index("ix_sends_card_due_at")
        for column in ("delivery_final", "reconciled_at", "card_due_at", "result_ts"):
            batch.drop_column(column)
