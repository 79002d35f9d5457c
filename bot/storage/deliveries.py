"""Delivery reports and recipient statuses (``DeliveryLog``): reports kept once per (message, status), statuses that
only move forward, also across replicas."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa

from bot.domain.delivery import RecipientDelivery, StatusUpdate, StoredReport, failed_words
from bot.storage.database import Database, now
from bot.storage.schema import UTCDateTime, delivery_reports, recipient_statuses, send_requests, sends

# Reports are applied this long after they came; one no send knows by then (a lost D7 answer, someone else's request)
# stays unapplied until ``prune`` deletes it.
REPORT_KEEP = timedelta(days=2)
STATUS_ROWS = 500  # recipients' statuses in one upsert (7 parameters each: well inside either database's limit)


class SqlDeliveryLog:
    """``DeliveryLog`` on the database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def save_report(self, key: str, request_id: str, recipient: str, status: str, reason: str | None) -> bool:
        """Group-committed like intents: a burst of reports is one insert."""
        values = {
            "id": str(uuid.uuid4()),
            "report_key": key[:300],
            "request_id": request_id,
            "recipient": recipient,
            "status": status,
            "reason": reason,
            "received_at": now(),
        }
        return await self._db.insert_once(delivery_reports, "report_key", values)

    async def pending_reports(self, request_ids: Sequence[str] | None = None, limit: int = 500) -> list[StoredReport]:
        """Reports not applied yet whose send knows their request_id, oldest first.

        The others stay unread until a send learns their request_id (a report may come before D7's answer, or before
        a restarted replica replays its journal), so however many there are they never fill ``limit`` in place of
        reports that can be applied. Those older than ``REPORT_KEEP`` are never walked (indexes of 0017); those of
        the last ``REPORT_KEEP`` cost one look-up in ``ix_sends_request_id`` each per sweep."""
        r, c = delivery_reports.c, sends.c
        known = sa.or_(
            sa.exists().where(c.request_id == r.request_id),
            sa.exists().where(send_requests.c.request_id == r.request_id),  # a later request of a send (0018)
        )
        query = sa.select(r.id, r.request_id, r.recipient, r.status, r.reason).where(
            r.applied_at.is_(None), r.received_at > now() - REPORT_KEEP, known
        )
        if request_ids is not None:
            query = query.where(r.request_id.in_(list(request_ids)))
        async with self._db.connect() as conn:
            rows = (await conn.execute(query.order_by(r.received_at).limit(limit))).all()
        return [StoredReport(*row) for row in rows]

    async def mark_applied(self, report_ids: Sequence[str]) -> None:
        if report_ids:
            statement = delivery_reports.update().where(delivery_reports.c.id.in_(list(report_ids)))
            await self._db.write(statement.values(applied_at=now()))

    async def apply_status(self, send_id: str, recipient: str, status: str, rank: int, reason: str | None) -> bool:
        return bool(await self.apply_statuses([StatusUpdate(send_id, recipient, status, rank, reason)]))

    async def apply_statuses(self, statuses: Sequence[StatusUpdate]) -> set[str]:
        """One transaction, a multi-row upsert per ``STATUS_ROWS``: of several for one recipient, the highest rank
        (the latest of equals) goes, since one statement may not change a row twice."""
        best: dict[tuple[str, str], StatusUpdate] = {}
        for update in statuses:
            known = best.get((update.send_id, update.recipient))
            if known is None or update.rank >= known.rank:
                best[(update.send_id, update.recipient)] = update
        rows = [
            {
                "send_id": u.send_id,
                "recipient": u.recipient,
                "status": u.status,
                "rank": u.rank,
                "reason": u.reason,
                "notified": False,
                "updated_at": now(),
            }
            for u in best.values()
        ]
        changed: set[str] = set()
        if not rows:
            return changed
        async with self._db.begin() as conn:
            for start in range(0, len(rows), STATUS_ROWS):
                insert = self._db.insert(recipient_statuses)
                statement = (
                    insert.values(rows[start : start + STATUS_ROWS])
                    .on_conflict_do_update(
                        index_elements=["send_id", "recipient"],
                        set_={
                            "status": insert.excluded.status,
                            "rank": insert.excluded.rank,
                            "reason": insert.excluded.reason,
                            "updated_at": insert.excluded.updated_at,
                        },
                        where=recipient_statuses.c.rank < insert.excluded.rank,
                    )
                    .returning(recipient_statuses.c.send_id)
                )
                changed.update(r.send_id for r in (await conn.execute(statement)).all())
        return changed

    async def statuses(self, send_id: str) -> list[RecipientDelivery]:
        s = recipient_statuses.c
        query = sa.select(s.recipient, s.status, s.reason, s.notified).where(s.send_id == send_id)
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [RecipientDelivery(r.recipient, r.status, r.reason, bool(r.notified)) for r in rows]

    async def mark_notified(self, send_id: str, recipients: Sequence[str]) -> None:
        s = recipient_statuses.c
        statement = recipient_statuses.update().where(s.send_id == send_id, s.recipient.in_(list(recipients)))
        await self._db.write(statement.values(notified=True))

    async def failures_since(self, since: datetime, limit: int) -> list[tuple[str, RecipientDelivery, datetime]]:
        r = recipient_statuses.c
        query = (
            sa.select(r.send_id, r.recipient, r.status, r.reason, r.notified, r.updated_at)
            .where(
                r.updated_at >= sa.literal(since, UTCDateTime()), sa.func.lower(r.status).in_(sorted(failed_words()))
            )
            .order_by(r.updated_at.desc())
            .limit(limit)
        )
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            (x.send_id, RecipientDelivery(x.recipient, x.status, x.reason, bool(x.notified)), x.updated_at)
            for x in rows
        ]

    async def recent(self, recipients: Sequence[str], since: datetime) -> list[tuple[str, str, str | None, datetime]]:
        """(recipient, status, reason, when) of free-text WhatsApp sends to these numbers since ``since``."""
        r, c = recipient_statuses.c, sends.c
        query = (
            sa.select(r.recipient, r.status, r.reason, r.updated_at)
            .join(sends, c.id == r.send_id)
            .where(r.recipient.in_(list(recipients)), r.updated_at >= sa.literal(since, UTCDateTime()))
            .where(c.via == "whatsapp", c.sent_template.is_(None))  # free text: only it needs the window
        )
        async with self._db.connect() as conn:
            return [(x.recipient, x.status, x.reason, x.updated_at) for x in (await conn.execute(query)).all()]
