"""Keep D7's own creation time and the error's kind; a key/value table for generated settings.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.storage.schema import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sends") as batch:
        batch.add_column(sa.Column("d7_created_at", UTCDateTime()))
        batch.add_column(sa.Column("error_kind", sa.String(64)))
    op.create_table(
        "kv",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("kv")
    with op.batch_alter_table("sends") as batch:
        batch.drop_column("error_kind")
        batch.drop_column("d7_created_at")
