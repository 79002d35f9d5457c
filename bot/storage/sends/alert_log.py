"""Forwarded alerts in the send log (``AlertLog``): found by key or identity, acknowledged once, resolved once.

Acknowledgement and resolution are ``SendRecord`` transitions made without the lease (a person in Slack, a
resolving post, while the outbox may hold the alert): each UPDATE is guarded by its own condition instead, so the
first acknowledgement wins and an alert is resolved once.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import sqlalchemy as sa

from bot.domain.models import Surface
from bot.domain.sends import SendRecord
from bot.storage.schema import UTCDateTime, sends
from bot.storage.sends.table import SendTable


class SqlAlertLog(SendTable):
    """``AlertLog`` on the database."""

    async def by_key(self, idempotency_key: str) -> SendRecord | None:
        return await self._first(sa.select(sends).where(sends.c.idempotency_key == idempotency_key))

    async def acknowledge(self, record: SendRecord, user_id: str) -> SendRecord | None:
        new = record.acknowledge(user_id, self._clock())
        c = sends.c
        statement = (
            sends.update()
            .where(c.id == record.id, c.surface == Surface.ALERT.value)
            .where(c.acked_at.is_(None), c.resolved_at.is_(None))  # ``acknowledgeable``
            .values(acked_by=new.acked_by, acked_at=new.acked_at)
        )
        async with self._db.begin() as conn:
            if (await conn.execute(statement)).rowcount != 1:
                return None  # not an alert, or acknowledged (or resolved) before: the first one counts
        return new

    async def mark_resolved(self, record: SendRecord) -> SendRecord | None:
        new = record.resolve(self._clock())
        statement = sends.update().where(sends.c.id == record.id, sends.c.resolved_at.is_(None))
        resolved = await self._db.write(statement.values(resolved_at=new.resolved_at)) == 1
        return new if resolved else None

    async def acked_repeat(self, rule: str, fingerprint: str, since: datetime) -> SendRecord | None:
        c = sends.c
        query = (
            sa.select(sends)
            .where(c.fingerprint == fingerprint, c.surface == Surface.ALERT.value, c.acked_at.is_not(None))
            .where(c.resolved_at.is_(None), c.created_at >= sa.literal(since, UTCDateTime()))
            .order_by(c.created_at.desc())
            .limit(1)
        )
        record = await self._first(query)
        return record if record is not None and record.request.alert and record.request.alert.rule == rule else None

    async def latest_alert(
        self, channel_id: str, identity: str, since: datetime, rules: Collection[str]
    ) -> SendRecord | None:
        c = sends.c
        query = (
            sa.select(sends)
            .where(c.identity == identity, c.channel_id == channel_id, c.surface == Surface.ALERT.value)
            .where(c.created_at >= sa.literal(since, UTCDateTime()), c.duplicate_of.is_(None))
            .where(c.alert["rule"].as_string().in_(list(rules)))
            .order_by(c.created_at.desc())
            .limit(1)
        )
        return await self._first(query)
