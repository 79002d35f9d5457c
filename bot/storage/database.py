"""The database: its engines and dialect, transactions, and group commit (many writers, one round trip).

PostgreSQL goes through asyncpg. SQLite statements run inline on the event loop with the standard driver: in WAL
mode with ``synchronous=NORMAL`` a commit does not fsync, so a statement costs microseconds, less than aiosqlite's
hop to its thread and back. It is safe because no transaction here awaits anything but its own statements, so
transactions never interleave on the single connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

__all__ = ["Database", "now"]

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.domain.clock import utc_now as now
from bot.storage.engine import sqlite_inline_engine

log = logging.getLogger("bot.storage")


class _Inline:
    """A synchronous SQLite connection behind the async ``execute`` the stores use."""

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    async def execute(self, statement: sa.Executable, parameters: Any = None) -> sa.CursorResult[Any]:
        return self._conn.execute(statement, parameters)


_Items = list[tuple[Any, "asyncio.Future[Any]"]]
_Flush = Callable[[_Items], Awaitable[list[Any]]]  # one transaction for the items; a result for each


class _Batch:
    """Work queued for the next group commit, and the futures of the callers waiting for it."""

    def __init__(self) -> None:
        self.items: _Items = []
        self.flusher: asyncio.Task[None] | None = None


class Database:
    """One database for the whole process; an async context manager that waits for queued writes and closes every
    connection on exit."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self._sync = sqlite_inline_engine(engine) if engine.dialect.name == "sqlite" else None
        # PostgreSQL: intents are inserted (before each ack) through connections of their own, so an ack never
        # waits for a connection that outbox workers hold (measured in an alert storm: ack p99 378 ms → see
        # docs/performance.md).
        self._intake = (
            create_async_engine(engine.url, pool_size=2, max_overflow=2, pool_pre_ping=True) if self.postgres else None
        )
        self._inserts: dict[str, _Batch] = {}
        self._writes = _Batch()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Let queued writes finish, then close every connection."""
        flushers = [b.flusher for b in (*self._inserts.values(), self._writes) if b.flusher is not None]
        await asyncio.gather(*flushers, return_exceptions=True)
        if self._sync is not None:
            self._sync.dispose()
        if self._intake is not None:
            await self._intake.dispose()
        await self.engine.dispose()

    def insert(self, table: sa.Table) -> Any:
        """``INSERT`` with the dialect's ``ON CONFLICT`` clauses."""
        return pg_insert(table) if self.postgres else sqlite_insert(table)

    @asynccontextmanager
    async def begin(self, intake: bool = False) -> AsyncIterator[Any]:
        """A transaction; ``intake``: on the connections kept for recording intents before an ack."""
        if self._sync is None:
            engine = self._intake if intake and self._intake is not None else self.engine
            async with engine.begin() as conn:
                yield conn
        else:
            with self._sync.begin() as conn:
                yield _Inline(conn)

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Any]:
        if self._sync is None:
            async with self.engine.connect() as conn:
                yield conn
        else:
            with self._sync.connect() as conn:
                yield _Inline(conn)

    # ------------------------------------------------------------ group commit

    async def insert_once(self, table: sa.Table, key: str, values: dict[str, Any]) -> bool:
        """Insert a row unless one with the same ``key`` exists (False then).

        Concurrent calls share one multi-row insert and one commit (group commit), on the intake connections:
        under a burst, acks wait for one round trip instead of queueing for the database one by one.
        """
        batch = self._inserts.setdefault(table.name, _Batch())

        async def flush(items: _Items) -> list[Any]:
            statement = (
                self.insert(table)
                .values([values for values, _ in items])
                .on_conflict_do_nothing(index_elements=[key])
                .returning(table.c.id)
            )
            async with self.begin(intake=True) as conn:
                inserted = set((await conn.execute(statement)).scalars())
            return [values["id"] in inserted for values, _ in items]

        return bool(await self._queue(batch, values, flush))

    async def write(self, statement: sa.Update) -> int:
        """Run an UPDATE in the next group commit; the number of rows it changed.

        Workers finishing at the same moment share one transaction and one commit instead of one each.
        """

        async def flush(items: _Items) -> list[Any]:
            async with self.begin() as conn:
                return [(await conn.execute(update)).rowcount for update, _ in items]

        return int(await self._queue(self._writes, statement, flush))

    async def _queue(self, batch: _Batch, item: Any, flush: _Flush) -> Any:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        batch.items.append((item, done))
        if batch.flusher is None or batch.flusher.done():
            batch.flusher = asyncio.create_task(self._flush(batch, flush))
        return await done

    @staticmethod
    async def _flush(batch: _Batch, flush: _Flush) -> None:
        while batch.items:
            items, batch.items = batch.items, []
            try:
                results = await flush(items)
            except Exception as exc:
                for _, done in items:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, done), result in zip(items, results, strict=True):
                if not done.done():
                    done.set_result(result)
