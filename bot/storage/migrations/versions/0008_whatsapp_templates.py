"""WhatsApp templates: the approved template a request names and its values (``sends.template``), and the one
checking decided (``sends.sent_template``: a command's, or an alert's from its rule); recipient statuses indexed by
recipient; indexes for App Home (a person's recent sends, today's failures).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sends") as batch:
        batch.add_column(sa.Column("template", sa.JSON()))
        batch.add_column(sa.Column("sent_template", sa.JSON()))
    # The compose form asks, as people type numbers, whether free WhatsApp text failed for them lately.
    op.create_index("ix_recipient_statuses_recipient", "recipient_statuses", ["recipient", "updated_at"])
    # App Home: a person's recent sends, and today's failures for admins.
    op.create_index("ix_sends_user_created_at", "sends", ["user_id", "created_at"])
    op.create_index("ix_recipient_statuses_updated_at", "recipient_statuses", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_recipient_statuses_updated_at", "recipient_statuses")
    op.drop_index("ix_sends_user_created_at", "sends")
    op.drop_index("ix_recipient_statuses_recipient", "recipient_statuses")
    with op.batch_alter_table("sends") as batch:
        batch.drop_column("sent_template")
        batch.drop_column("template")
