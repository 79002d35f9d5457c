"""Maintenance in small batches, each its own short transaction: no batch holds SQLite's write lock (or PostgreSQL's
row locks) for more than a fraction of a second, and other writers — the bot recording a request, with 2 s to do
it — get their turn between two batches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from bot.storage.database import IN_LIST, LOCK_POLL, Database

BATCH_ROWS = 500  # rows in the first batch; then as many as fit in BATCH_TIME, between BATCH_FLOOR and BATCH_CEILING
BATCH_FLOOR = 20
BATCH_CEILING = 5000
BATCH_TIME = 0.08  # seconds a batch may hold the lock: a slower one halves the next, a quicker one doubles it
# Between two batches: longer than the bot's longest pause between two tries for the write lock (LOCK_POLL), so a
# writer waiting for it always gets its turn, instead of finding the lock taken again at each try.
BATCH_PAUSE = 2.5 * LOCK_POLL


@dataclass
class Batches:
    """The size of the next batch, adapted to how long the last one held the lock; the longest hold so far."""

    size: int = field(default_factory=lambda: BATCH_ROWS)
    longest: float = 0.0  # seconds, from the lock taken to the commit
    _asked: int = 0  # rows the batch under way asked for

    @asynccontextmanager
    async def one(self, db: Database) -> AsyncIterator[Any]:
        """One batch's transaction; ask for at most ``size`` rows in it."""
        self._asked = self.size
        async with db.begin() as conn:
            started = time.perf_counter()
            yield conn
        held = time.perf_counter() - started
        self.longest = max(self.longest, held)
        if held > BATCH_TIME:
            self.size = max(BATCH_FLOOR, self.size // 2)
        elif held < BATCH_TIME / 2:
            self.size = min(BATCH_CEILING, self.size * 2)

    async def more(self, done: int) -> bool:
        """Whether the batch just ended was full (there may be more); if so, other writers' turn first."""
        if done < self._asked:
            return False
        await asyncio.sleep(BATCH_PAUSE)
        return True

    @staticmethod
    def chunks(keys: Sequence[Any]) -> Iterator[Sequence[Any]]:
        """``keys`` in slices small enough for one ``IN (…)``."""
        for start in range(0, len(keys), IN_LIST):
            yield keys[start : start + IN_LIST]

    async def delete(
        self, db: Database, table: sa.Table, condition: sa.ColumnElement[bool], *, skip_locked: bool = False
    ) -> int:
        """``DELETE FROM table WHERE condition``, a batch of rows (by primary key) at a time; how many rows.
        ``skip_locked``: rows another transaction holds are left (PostgreSQL), taken in key order."""
        key = list(table.primary_key.columns)
        deleted = 0
        while True:
            async with self.one(db) as conn:
                chosen = sa.select(*key).where(condition).limit(self.size)
                if skip_locked:
                    chosen = chosen.order_by(*key).with_for_update(skip_locked=True)
                target = key[0].in_(chosen.scalar_subquery()) if len(key) == 1 else sa.tuple_(*key).in_(chosen)
                done = int((await conn.execute(table.delete().where(target))).rowcount)
            deleted += done
            if not await self.more(done):
                return deleted
