"""The database: its engines and dialect, transactions, and group commit (many writers, one round trip).

PostgreSQL goes through asyncpg. SQLite statements run inline on the event loop with the standard driver: in WAL
mode with ``synchronous=NORMAL`` a commit does not fsync, so a statement costs microseconds, less than aiosqlite's
hop to its thread and back. It is safe because no transaction here awaits anything but its own statements, so
transactions never interleave on the single connection.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

__all__ = ["IN_LIST", "LOCK_POLL", "Database", "Rollback", "now"]

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.clock import utc_now as now
from bot.domain.errors import kind_of
from bot.storage.engine import create_engine, sqlite_inline_engine

log = logging.getLogger("bot.storage")


# How long a write waits for SQLite's write lock when another process holds it (``audit prune``); intents wait
# less (their ack cannot wait).
LOCK_WAIT = 30.0
INTAKE_WAIT = 2.0
# The longest pause between two tries for the write lock while another process holds it: maintenance pauses
# longer than this between its batches (``batches.py``), so a waiting write always finds one of the gaps.
LOCK_POLL = 0.01
# Group commit that groups, on SQLite: its statements run inline, so under a burst each request arrived on its own
# loop turn and every intent had a commit of its own (804 commits for 806 intents, bench.vs_bare_bolt), 40 % of the
# ack's CPU. While the last commit ended less than GROUP_BUSY ago, the next waits GROUP_LINGER for the requests
# arriving meanwhile; an idle bot commits at once. PostgreSQL needs no linger: rows pile up during its round trip.
GROUP_BUSY = 0.01
GROUP_LINGER = 0.002
IN_LIST = 500  # keys bound in one ``IN (…)`` (SQLite before 3.32 takes 999 parameters at most)


def _locked(exc: sqlite3.OperationalError) -> bool:
    message = str(exc).lower()
    return "locked" in message or "busy" in message


@dataclass
class WriteHealth:
    """When writes last worked and last failed (and how): a database that answers reads may refuse writes."""

    last_ok: float | None = None
    last_failure: float | None = None
    failure: str | None = None  # the kind of the last failure (never its message: it may hold values)
    failures: int = 0  # since start (``relay_db_write_failures_total``)

    def succeeded(self) -> None:
        self.last_ok = time.monotonic()

    def failed(self, exc: BaseException) -> None:
        self.last_failure = time.monotonic()
        self.failure = kind_of(exc)
        self.failures += 1

    @property
    def failing(self) -> bool:
        """The latest write failed (none has worked since)."""
        return self.last_failure is not None and (self.last_ok is None or self.last_failure > self.last_ok)


class Rollback(Exception):
    """Raised inside ``Database.begin`` to undo the transaction on purpose: not counted as a failed write."""


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
        self.last_flush = -math.inf  # loop time the last group commit ended


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
        url = engine.url.render_as_string(hide_password=False)
        self._intake = create_engine(url, pool_size=2, pool_overflow=2) if self.postgres else None
        self._reads = engine.execution_options(isolation_level="AUTOCOMMIT")  # the same pool
        self._inserts: dict[str, _Batch] = {}
        self._insert_once: dict[tuple[str, str], Any] = {}  # the statement of each (table, key), built once
        self._writes = _Batch()
        self._keyed: dict[tuple[str, str], _Batch] = {}  # ``write_keys``: one batch per table and key
        self._grouped: dict[str, _Batch] = {}  # ``grouped``: one batch per name
        self.writes = WriteHealth()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Let queued writes finish, then close every connection."""
        batches = (*self._inserts.values(), *self._keyed.values(), *self._grouped.values(), self._writes)
        flushers = [b.flusher for b in batches if b.flusher is not None]
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
    async def begin(self, intake: bool = False, within: float = LOCK_WAIT) -> AsyncIterator[Any]:
        """A write transaction; ``intake``: on the connections kept for recording intents before an ack.

        SQLite: the write lock is taken at BEGIN; while another process holds it, this waits asynchronously (the
        loop goes on) for up to ``within`` seconds, then raises. Failed and successful writes are counted for the
        health check.
        """
        try:
            if self._sync is None:
                engine = self._intake if intake and self._intake is not None else self.engine
                async with engine.begin() as conn:
                    yield conn
            else:
                inline, transaction = await self._inline_begin(self._sync, within)
                try:
                    yield _Inline(inline)
                except BaseException:
                    transaction.rollback()
                    raise
                else:
                    transaction.commit()
                finally:
                    inline.close()
        except Rollback:
            raise
        except Exception as exc:
            self.writes.failed(exc)
            raise
        self.writes.succeeded()

    async def can_write(self, within: float = 0.5) -> bool:
        """SQLite: whether the write lock can be had within ``within`` seconds (another process may hold it).
        PostgreSQL has no such lock to wait for: True."""
        if self._sync is None:
            return True
        try:
            inline, transaction = await self._inline_begin(self._sync, within)
        except Exception:  # locked, read-only, or not answering at all
            return False
        transaction.rollback()
        inline.close()
        return True

    @staticmethod
    async def _inline_begin(sync: sa.Engine, within: float) -> tuple[sa.Connection, sa.RootTransaction]:
        """``BEGIN IMMEDIATE`` on the inline connection, waiting (asynchronously) while another process writes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        pause = 0.005
        while True:
            conn = sync.connect()
            try:
                # Straight to the driver: the lock, or "database is locked" at once (busy timeout 0).
                conn.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
                return conn, conn.begin()
            except sqlite3.OperationalError as exc:
                conn.close()
                if not _locked(exc) or loop.time() + pause > deadline:
                    raise
            await asyncio.sleep(pause)  # another process holds the write lock: the loop goes on meanwhile
            pause = min(pause * 2, LOCK_POLL)

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Any]:
        """A connection for reads. PostgreSQL: in autocommit, each statement its own snapshot, with no BEGIN and
        ROLLBACK around it (two round trips of the three a read cost)."""
        if self._sync is None:
            async with self._reads.connect() as conn:
                yield conn
        else:
            with self._sync.connect() as conn:
                yield _Inline(conn)

    # ------------------------------------------------------------ group commit

    async def insert_once(self, table: sa.Table, key: str, values: dict[str, Any]) -> bool:
        """Insert a row unless one with the same ``key`` exists (False then); ``TimeoutError`` after
        ``INTAKE_WAIT`` seconds (callers answer someone waiting: Slack gives 3 s).

        Concurrent calls share one multi-row insert and one commit (group commit), on the intake connections:
        under a burst, acks wait for one round trip instead of queueing for the database one by one.
        """
        batch = self._inserts.get(table.name)
        if batch is None:
            batch = self._inserts[table.name] = _Batch()

        statement = self._insert_once.get((table.name, key))
        if statement is None:
            # One statement per table, its rows given as parameters: SQLAlchemy's "insertmanyvalues" renders the
            # batch from a cached compiled form. Building .values([...]) for each batch compiled anew every time:
            # half of the bot's CPU on the ack path under a burst (py-spy, bench.vs_bare_bolt).
            statement = self.insert(table).on_conflict_do_nothing(index_elements=[key]).returning(table.c.id)
            self._insert_once[(table.name, key)] = statement

        async def flush(items: _Items) -> list[Any]:
            async with asyncio.timeout(INTAKE_WAIT), self.begin(intake=True, within=INTAKE_WAIT) as conn:
                # Only the rows whose caller still waits: one that gave up has told a person "not recorded". On
                # SQLite nothing runs between this and the commit, so such a row never lands later.
                rows = [values for values, done in items if not done.done()]
                inserted = set((await conn.execute(statement, rows)).scalars()) if rows else set()
            return [values["id"] in inserted for values, _ in items]

        async with asyncio.timeout(INTAKE_WAIT):
            return bool(await self._queue(batch, values, flush))

    async def write(self, statement: sa.Update) -> int:
        """Run an UPDATE in the next group commit; the number of rows it changed.

        Workers finishing at the same moment share one transaction and one commit instead of one each.
        """

        async def flush(items: _Items) -> list[Any]:
            async with self.begin() as conn:
                return [(await conn.execute(update)).rowcount for update, _ in items]

        return int(await self._queue(self._writes, statement, flush))

    async def write_keys(self, table: sa.Table, key: str, value: str, changes: dict[str, Any]) -> None:
        """``UPDATE table SET changes WHERE key = value``, group-committed as one ``WHERE key IN (…)`` with the
        others arriving now (one statement instead of one each: confirming every intent recorded)."""
        batch = self._keyed.get((table.name, key))
        if batch is None:
            batch = self._keyed[(table.name, key)] = _Batch()

        async def flush(items: _Items) -> list[Any]:
            values = [value for value, _ in items]
            async with self.begin() as conn:
                for start in range(0, len(values), IN_LIST):
                    chunk = values[start : start + IN_LIST]
                    await conn.execute(table.update().where(table.c[key].in_(chunk)).values(**changes))
            return [None] * len(items)

        await self._queue(batch, value, flush)

    async def grouped(self, name: str, item: Any, flush: _Flush) -> Any:
        """``item``'s result from the next group commit named ``name``: ``flush`` gets every item queued meanwhile
        (callers still waiting or not: it skips those whose future is done) and returns a result for each, in one
        transaction of its own. While one runs, the items arriving meanwhile wait for the next."""
        batch = self._grouped.get(name)
        if batch is None:
            batch = self._grouped[name] = _Batch()
        return await self._queue(batch, item, flush)

    async def _queue(self, batch: _Batch, item: Any, flush: _Flush) -> Any:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        batch.items.append((item, done))
        if batch.flusher is None or batch.flusher.done():
            batch.flusher = asyncio.create_task(self._flush(batch, flush, linger=self._sync is not None))
        return await done

    @staticmethod
    async def _flush(batch: _Batch, flush: _Flush, *, linger: bool) -> None:
        loop = asyncio.get_running_loop()
        while batch.items:
            if linger and loop.time() - batch.last_flush < GROUP_BUSY:
                await asyncio.sleep(GROUP_LINGER)
            items, batch.items = batch.items, []
            try:
                results = await flush(items)
            except Exception as exc:
                for _, done in items:
                    if not done.done():
                        done.set_exception(exc)
                continue
            finally:
                batch.last_flush = loop.time()
            for (_, done), result in zip(items, results, strict=True):
                if not done.done():
                    done.set_result(result)
