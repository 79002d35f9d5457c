"""Sends in several D7 requests: each request's slice of the recipients and answer (``sends.parts``), and the request
ids after the first, by which delivery reports and ``/sms status`` find their send (``send_requests``).

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sends", sa.Column("parts", sa.JSON()))
    op.create_table(
        "send_requests",
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("send_id", sa.String(36), nullable=False),
    )
    op.create_index("ix_send_requests_send_id", "send_requests", ["send_id"])


def downgrade() -> None:
    op.drop_index("ix_send_requests_send_id", "send_requests")
    op.drop_table("send_requests")
    with op.batch_alter_table("sends") as batch:
        batch.drop_column("parts")
