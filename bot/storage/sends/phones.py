"""The send log read by phone (``SendsToPhones``): the latest send that texted a phone, for a text it sends back."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

import sqlalchemy as sa

from bot.domain.models import Surface
from bot.domain.sends import SendRecord, SendState
from bot.storage.schema import UTCDateTime, sends
from bot.storage.sends.table import SendTable

ANSWERS = "answer:%"  # the bot's own answers to phones (``bot.domain.keys.answer``)
LOOKED_AT = 20  # latest candidates read; one held back for the phone (not texted) is skipped
RECORDED_BEFORE = timedelta(days=2)  # how long before it was texted a send may have been recorded (a step, a summary)


class SqlSendsToPhones(SendTable):
    """``SendsToPhones`` on the database."""

    async def latest_to(
        self, phone: str, since: datetime, surfaces: Collection[Surface] | None = None
    ) -> SendRecord | None:
        c = sends.c
        # When it was texted, not when it was recorded: an escalation step or a summary is recorded when its alert
        # comes in and texted minutes or hours later, after other alerts maybe.
        texted = sa.func.coalesce(c.finished_at, c.created_at)
        # The recipients are a JSON list of E.164 numbers: a quoted number matches one element exactly, on SQLite and
        # PostgreSQL alike. The bound on created_at (indexed) keeps the scan to the last days' sends.
        query = (
            sa.select(sends)
            .where(c.created_at >= sa.literal(since - RECORDED_BEFORE, UTCDateTime()))
            .where(texted >= sa.literal(since, UTCDateTime()), c.state == SendState.ACCEPTED.value)
            .where(sa.cast(c.recipients, sa.Text).like(f'%"{phone}"%'), c.idempotency_key.not_like(ANSWERS))
            .order_by(texted.desc(), c.created_at.desc())
            .limit(LOOKED_AT)
        )
        if surfaces is not None:
            query = query.where(c.surface.in_([s.value for s in surfaces]))
        for record in await self._all(query):
            if record.checked is not None and any(n.e164 == phone for n in record.checked.recipients):
                return record
        return None
