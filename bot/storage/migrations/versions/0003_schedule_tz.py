"""Keep the time zone a scheduled send was asked in, so D7 gets the user's local time and offset.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sends") as batch:
        batch.add_column(sa.Column("schedule_tz", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("sends") as batch:
        batch.drop_column("schedule_tz")
