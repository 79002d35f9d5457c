"""Persistence: SQLAlchemy 2 (async) on a SQLite file by default, PostgreSQL via DATABASE_URL.

``Storage`` is the database (``database.py``: engines, transactions, group commit) and the stores on it, one job
each: ``sends/`` (the send log: its queue, read models and alert log), ``alerts.py`` (dedup and per-phone limits),
``budgets.py`` (the policy's budgets), ``deliveries.py`` (reports and statuses), ``inbound.py`` (texts phones sent
back, and the opt-out list), ``oncall.py`` (on-call overrides and handoffs), ``settings.py`` (what the bot keeps
for itself), ``verifications.py`` (verified phones).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Self

import sqlalchemy as sa

from bot.storage.alerts import SqlAlertLedger
from bot.storage.batches import Batches
from bot.storage.budgets import SqlBudgetLedger
from bot.storage.database import Database, now
from bot.storage.deliveries import SqlDeliveryLog
from bot.storage.engine import create_engine, migrate
from bot.storage.inbound import SqlInboundLog, SqlOptOuts
from bot.storage.links import SqlActionLinks
from bot.storage.oncall import SqlOnCallHandoffs, SqlOnCallOverrides
from bot.storage.schema import (
    UTCDateTime,
    action_links,
    alert_dedupe,
    alert_deliveries,
    alert_windows,
    budget_charges,
    budget_windows,
    delivery_reports,
    inbound,
    oncall_handoffs,
    oncall_overrides,
    recipient_statuses,
    sends,
)
from bot.storage.sends import FINAL_STATES, SqlSendStore
from bot.storage.settings import SqlSettings
from bot.storage.verifications import SqlPhoneVerifications

__all__ = ["Storage"]


@dataclass(frozen=True)
class Storage:
    """The database and its stores; closing it lets queued writes finish and closes every connection."""

    database: Database
    sends: SqlSendStore
    alerts: SqlAlertLedger
    deliveries: SqlDeliveryLog
    settings: SqlSettings
    budgets: SqlBudgetLedger

    @classmethod
    def on(cls, database: Database) -> Storage:
        return cls(
            database,
            SqlSendStore(database),
            SqlAlertLedger(database),
            SqlDeliveryLog(database),
            SqlSettings(database),
            SqlBudgetLedger(database),
        )

    @classmethod
    async def open(cls, url: str) -> Storage:
        """Connect to ``DATABASE_URL`` and bring the schema to the newest migration (rows kept)."""
        engine = create_engine(url)
        try:
            await migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls.on(Database(engine))

    @property
    def links(self) -> SqlActionLinks:
        """Each phone's link to an alert (stateless: one made per use is the same store)."""
        return SqlActionLinks(self.database)

    @property
    def inbound(self) -> SqlInboundLog:
        """Texts phones sent back (stateless, like ``links``)."""
        return SqlInboundLog(self.database)

    @property
    def optouts(self) -> SqlOptOuts:
        """The opt-out list (stateless)."""
        return SqlOptOuts(self.database)

    @property
    def oncall(self) -> SqlOnCallOverrides:
        """On-call overrides taken or given from Slack (stateless)."""
        return SqlOnCallOverrides(self.database)

    @property
    def handoffs(self) -> SqlOnCallHandoffs:
        """On-call handoffs noticed (stateless)."""
        return SqlOnCallHandoffs(self.database)

    @property
    def verifications(self) -> SqlPhoneVerifications:
        """Phones people verified, and their codes and tries (stateless)."""
        return SqlPhoneVerifications(self.database)

    @property
    def single_process(self) -> bool:
        """SQLite: one process owns the file, so whatever is in flight at start was left by a dead process."""
        return not self.database.postgres

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.database.aclose()

    async def prune(self, before: datetime) -> int:
        """Delete finished sends older than ``before`` (with their statuses and per-phone alert records), reports
        received before then, on-call overrides and handoffs over by then, expired dedup, limit and budget windows,
        and what the deleted sends counted against budgets; those in flight are kept. How many sends.

        In small batches, each its own short transaction (``Batches``): on SQLite the write lock is held for a
        fraction of a second at a time, so the bot's requests keep being recorded while a large prune runs."""
        batches = Batches()
        old = sa.select(sends.c.id).where(
            sends.c.created_at < before, sends.c.state.in_(FINAL_STATES), sends.c.posted_at.is_not(None)
        )
        deleted = 0
        while True:
            async with batches.one(self.database) as conn:
                ids = list((await conn.execute(old.limit(batches.size))).scalars())
                for chunk in batches.chunks(ids):
                    for child in (recipient_statuses, alert_deliveries, budget_charges):
                        await conn.execute(child.delete().where(child.c.send_id.in_(chunk)))
                    await conn.execute(sends.delete().where(sends.c.id.in_(chunk)))
            deleted += len(ids)
            if not await batches.more(len(ids)):
                break
        over = sa.literal(before, UTCDateTime())  # on-call overrides over before any send kept began
        at = sa.literal(min(before, now()), UTCDateTime())
        await batches.delete(self.database, delivery_reports, delivery_reports.c.received_at < before)
        handled = sa.and_(inbound.c.received_at < before, inbound.c.next_attempt_at.is_(None))
        await batches.delete(self.database, inbound, handled)
        await batches.delete(self.database, action_links, action_links.c.expires_at < over)
        await batches.delete(self.database, oncall_overrides, oncall_overrides.c.ends_at < over)
        await batches.delete(self.database, oncall_handoffs, oncall_handoffs.c.ends_at < over)
        await batches.delete(self.database, alert_dedupe, alert_dedupe.c.until < at)
        await batches.delete(self.database, alert_windows, alert_windows.c.window_end < at)
        # Ended windows, locked in key order and skipping any a charge holds (PostgreSQL): no deadlock with it.
        await batches.delete(self.database, budget_windows, budget_windows.c.window_end < at, skip_locked=True)
        return deleted
