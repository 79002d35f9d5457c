"""Database engine from ``DATABASE_URL`` (plain URLs turned into async drivers), and schema migrations."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

log = logging.getLogger("bot.storage")

_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any fixed number: replicas starting together take turns to migrate.
_MIGRATION_LOCK = 0x64377262


def async_url(url: str) -> str:
    """``sqlite:///bot.db`` → ``sqlite+aiosqlite:///bot.db``; ``postgresql://…`` → ``postgresql+asyncpg://…``."""
    parsed = make_url(url)
    driver = _DRIVERS.get(parsed.drivername, parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _: Any, busy_ms: int = 30000) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers never wait for the writer; NORMAL: durable at every checkpoint, far fewer fsyncs.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
    cursor.close()


# The inline connection never waits for SQLite's lock inside SQLite: a busy wait would block the event loop (acks
# took 8 s while ``audit prune`` held the lock). Its write transactions begin with ``BEGIN IMMEDIATE`` (the lock
# taken at once or refused at once), emitted by ``Database.begin``, which waits for the lock asynchronously;
# reads run without a transaction, as the driver ran them before.
def _inline_connect(dbapi_connection: Any, record: Any) -> None:
    _sqlite_pragmas(dbapi_connection, record, busy_ms=0)
    dbapi_connection.isolation_level = None  # the driver's own implicit BEGIN is off: ``Database.begin`` emits ours


def sqlite_inline_engine(engine: AsyncEngine) -> sa.Engine:
    """A synchronous engine on the same SQLite file, one connection, for statements run on the event loop."""
    url = engine.url.set(drivername="sqlite")
    inline = sa.create_engine(url, poolclass=sa.pool.SingletonThreadPool, pool_size=1, hide_parameters=True)
    event.listen(inline, "connect", _inline_connect)
    return inline


# PostgreSQL connections, all kept open: with overflow connections (closed when returned) an alert storm opened
# ~1,900 connections in 10 s (TLS probe, auth, each time); a fixed pool of 15 opens 15 (docs/performance.md).
POOL_SIZE = 15
POOL_OVERFLOW = 0
# Nothing waits for PostgreSQL without a deadline: connecting, a free connection from the pool, one statement.
CONNECT_TIMEOUT = 2.0
POOL_TIMEOUT = 5.0
STATEMENT_TIMEOUT = 10.0


def create_engine(url: str, *, pool_size: int = POOL_SIZE, pool_overflow: int = POOL_OVERFLOW) -> AsyncEngine:
    """The async engine for ``DATABASE_URL``. Statement parameters never reach a log or an error message
    (``hide_parameters``): they hold message texts, phone numbers and response_urls."""
    full = async_url(url)
    if full.startswith("sqlite"):
        # One connection: SQLite has one writer anyway, and a single connection never meets "database is locked".
        engine = create_async_engine(full, pool_size=1, max_overflow=0, pool_timeout=60, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_async_engine(
        full,
        pool_size=pool_size,
        max_overflow=pool_overflow,
        pool_timeout=POOL_TIMEOUT,
        hide_parameters=True,
        connect_args={"timeout": CONNECT_TIMEOUT, "command_timeout": STATEMENT_TIMEOUT},
    )
    event.listen(engine.sync_engine.pool, "checkin", _checked_in)
    event.listen(engine.sync_engine.pool, "checkout", _ping_if_idle)
    return engine


# A PostgreSQL connection idle in the pool for longer than this is pinged when taken out: one the network or a
# restarted server cut meanwhile is replaced before a statement meets it. One in steady use is not pinged:
# SQLAlchemy's ``pool_pre_ping`` cost BEGIN, ";" and ROLLBACK at every checkout, 3 × 3.2 of a send's 22 round
# trips (bench.replicas). A connection cut while in use fails its statement, as it would with the pre-ping, and
# SQLAlchemy then replaces every connection older than the failure at its next checkout.
PING_IDLE = 1.0


def _checked_in(dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    idle_since = record.info.pop("idle_since", None)
    if idle_since is None or time.monotonic() - idle_since < PING_IDLE:
        return
    try:
        dbapi_connection.ping()
    except Exception as exc:
        # The pool closes this connection and checks out another (SQLAlchemy's "pessimistic" handling).
        raise sa.exc.DisconnectionError(f"idle connection did not answer a ping ({type(exc).__name__})") from exc


async def ping(engine: AsyncEngine, seconds: float = 2.0) -> bool:
    """True when the database answers ``SELECT 1`` within ``seconds``."""
    try:
        async with asyncio.timeout(seconds), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "unreachable" to a health check
        log.warning("database unreachable: %s", type(exc).__name__)
        return False
    return True


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations in {MIGRATIONS}")
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Create the schema, or upgrade it in place keeping every row; safe when replicas start together."""

    def upgrade(connection: Connection) -> None:
        command.upgrade(_config(connection), revision)

    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        before = await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
        await conn.run_sync(upgrade)
        after = await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
    if before != after:
        log.info("database schema %s → %s", before or "(empty)", after)
