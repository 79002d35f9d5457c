"""An intent recorded for a person is its recorder's until it confirms having told them "recorded" (issue 30): a
replica never sends one whose insert landed after its sender was told "not recorded".

A nullable column without a default: on SQLite and PostgreSQL alike only the table's definition changes, no row is
rewritten, so the migration holds the lock for a moment whatever the size of the send log. Existing rows read as
confirmed.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sends", sa.Column("recorded_by", sa.String(64)))  # ALTER TABLE … ADD COLUMN, not a batch copy


def downgrade() -> None:
    with op.batch_alter_table("sends") as batch:
        batch.drop_column("recorded_by")
