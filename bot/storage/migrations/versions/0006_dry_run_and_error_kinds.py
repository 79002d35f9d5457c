"""Typed columns: ``dry_run`` instead of the ``dry-run-`` request id prefix, and errors stored by their stable kind
instead of their class name.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The class names 0002..0005 stored, and the kinds that replace them (frozen here: later renames must not apply).
KINDS = {
    "D7Error": "d7_error",
    "D7AuthError": "auth",
    "D7InsufficientCreditError": "insufficient_credit",
    "D7NotFoundError": "not_found",
    "D7InvalidOriginatorError": "invalid_originator",
    "D7ValidationError": "validation",
    "D7RateLimitedError": "rate_limited",
    "D7UnavailableError": "unavailable",
    "D7OutcomeUnknownError": "outcome_unknown",
}

sends = sa.table("sends", sa.column("dry_run", sa.Boolean()), sa.column("request_id"), sa.column("error_kind"))


def upgrade() -> None:
    with op.batch_alter_table("sends") as batch:
        batch.add_column(sa.Column("dry_run", sa.Boolean()))
    op.execute(sends.update().where(sends.c.request_id.like("dry-run-%")).values(dry_run=True))
    for name, kind in KINDS.items():
        op.execute(sends.update().where(sends.c.error_kind == name).values(error_kind=kind))


def downgrade() -> None:
    for name, kind in KINDS.items():
        op.execute(sends.update().where(sends.c.error_kind == kind).values(error_kind=name))
    with op.batch_alter_table("sends") as batch:
        batch.drop_column("dry_run")
