"""Unapplied delivery reports, indexed by age and by request_id: the sweep walks only the last ``REPORT_KEEP`` of
them, however many older ones no send ever matched are kept (a lost D7 answer, someone else's request).

Both are partial indexes (SQLite and PostgreSQL have them): applied reports, nearly all of them, are in neither. They
replace ``ix_delivery_reports_pending`` (applied_at, request_id): that one held every applied report too, and SQLite,
which keeps no statistics, took its ``applied_at IS NULL`` for the better way in and read every unapplied report ever
kept on each sweep. Building them holds up report inserts for the moment it takes to read the table once.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

UNAPPLIED = sa.text("applied_at IS NULL")


def _unapplied(name: str, columns: list[str]) -> None:
    op.create_index(name, "delivery_reports", columns, sqlite_where=UNAPPLIED, postgresql_where=UNAPPLIED)


def upgrade() -> None:
    # The sweep: the oldest first, each request_id looked up in ``ix_sends_request_id``.
    _unapplied("ix_delivery_reports_unapplied", ["received_at", "request_id"])
    # Reports just received (``Deliveries.received``), and those of a send that just learnt its request_id.
    _unapplied("ix_delivery_reports_unapplied_request", ["request_id"])
    op.drop_index("ix_delivery_reports_pending", "delivery_reports")


def downgrade() -> None:
    op.create_index("ix_delivery_reports_pending", "delivery_reports", ["applied_at", "request_id"])
    op.drop_index("ix_delivery_reports_unapplied_request", "delivery_reports")
    op.drop_index("ix_delivery_reports_unapplied", "delivery_reports")
