"""What the send log's stores share: the ``sends`` table on one database, what "now" is, and a send read by id."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from bot.domain.clock import Clock
from bot.domain.sends import SendRecord
from bot.storage.database import Database, now
from bot.storage.schema import sends
from bot.storage.sends.rows import record_of


class SendTable:
    """The ``sends`` table; ``clock`` says when things happen (the database's own clock is never asked)."""

    def __init__(self, db: Database, clock: Clock = now) -> None:
        self._db = db
        self._clock = clock

    async def get(self, send_id: str) -> SendRecord | None:
        return await self._first(sa.select(sends).where(sends.c.id == send_id))

    async def _first(self, query: sa.Select[Any]) -> SendRecord | None:
        async with self._db.connect() as conn:
            row = (await conn.execute(query)).first()
        return record_of(row) if row is not None else None

    async def _all(self, query: sa.Select[Any]) -> list[SendRecord]:
        async with self._db.connect() as conn:
            return [record_of(r) for r in (await conn.execute(query)).all()]

    async def _count(self, query: sa.Select[Any]) -> int:
        async with self._db.connect() as conn:
            return int((await conn.execute(query)).scalar_one())
