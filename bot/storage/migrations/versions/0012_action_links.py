"""Action links: each phone's link to the alert its text carried, so the phone can acknowledge it (issue 28).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.storage.schema import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "action_links",
        sa.Column("token", sa.String(32), primary_key=True),
        sa.Column("send_id", sa.String(36), nullable=False),
        sa.Column("alert_key", sa.String(255), nullable=False),
        sa.Column("phone", sa.String(20), nullable=False),
        sa.Column("form_token", sa.String(32), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("send_id", "phone", name="uq_action_links_send_phone"),
    )


def downgrade() -> None:
    op.drop_table("action_links")
