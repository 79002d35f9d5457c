"""The send log as people read it (``SendViews``): App Home's lists and counts, and ``python -m bot audit``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from bot.domain.alerts import AlertActivity
from bot.domain.models import Surface
from bot.domain.sends import SendRecord, SendState
from bot.storage.schema import UTCDateTime, alert_deliveries, sends
from bot.storage.sends.table import SendTable

NEED_A_PERSON = [SendState.UNKNOWN.value, SendState.REJECTED.value, SendState.FAILED.value]
REFUSED = (SendState.DENIED, SendState.REJECTED, SendState.FAILED)


class SqlSendViews(SendTable):
    """``SendViews`` on the database."""

    async def audit(self, since: datetime | None = None) -> list[SendRecord]:
        query = sa.select(sends).order_by(sends.c.created_at)
        if since is not None:
            query = query.where(sends.c.created_at >= since)
        return await self._all(query)

    async def recent_of(self, user_id: str, limit: int) -> list[SendRecord]:
        c = sends.c
        query = (
            sa.select(sends)
            .where(c.user_id == user_id, c.surface.not_in([s.value for s in Surface if s.is_alert]))
            .order_by(c.created_at.desc())
            .limit(limit)
        )
        return await self._all(query)

    async def counts_since(self, since: datetime) -> list[tuple[str, str, int]]:
        c = sends.c
        query = (
            sa.select(c.channel_id, c.state, sa.func.count())
            .where(c.created_at >= sa.literal(since, UTCDateTime()), c.surface != Surface.SUMMARY.value)
            .group_by(c.channel_id, c.state)
        )
        async with self._db.connect() as conn:
            return [(str(ch), str(st), int(n)) for ch, st, n in (await conn.execute(query)).all()]

    async def needing_a_person(self, since: datetime, limit: int) -> list[SendRecord]:
        c = sends.c
        query = (
            sa.select(sends)
            .where(c.created_at >= sa.literal(since, UTCDateTime()), c.state.in_(NEED_A_PERSON))
            .order_by(c.created_at.desc())
            .limit(limit)
        )
        return await self._all(query)

    async def alert_activity(self, since: datetime) -> list[AlertActivity]:
        """Held: the phones the alert ledger held an alert back for (quiet hours, per-phone limits)."""
        c, d = sends.c, alert_deliveries.c
        at = sa.literal(since, UTCDateTime())
        rule = c.alert["rule"].as_string()
        query = (
            sa.select(
                rule,
                sa.func.max(c.created_at),
                _count(SendState.ACCEPTED),
                _count(SendState.DEDUPLICATED),
                _count(*REFUSED),
            )
            .where(c.created_at >= at, c.surface == Surface.ALERT.value)
            .group_by(rule)
        )
        held = sa.select(d.rule, sa.func.count()).where(d.created_at >= at, d.held.is_(True)).group_by(d.rule)
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
            holds = {str(r): int(n) for r, n in (await conn.execute(held)).all()}
        return [
            AlertActivity(
                rule=str(name),
                last_match=UTCDateTime().process_result_value(last, self._db.engine.dialect),
                texted=int(texted or 0),
                held=holds.get(str(name), 0),
                repeats=int(repeats or 0),
                refused=int(refused or 0),
            )
            for name, last, texted, repeats, refused in rows
        ]


def _count(*states: SendState) -> Any:
    """How many of the group's sends are in one of ``states``."""
    return sa.func.sum(sa.case((sends.c.state.in_([s.value for s in states]), 1), else_=0))
