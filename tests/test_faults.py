"""The fault injection tools themselves: the TCP proxy's three modes (against an echo server, and PostgreSQL when
TEST_DATABASE_URL is set) and the SQLite locker in a second process."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.faults import TcpProxy, lock_sqlite

PG_URL = os.environ.get("TEST_DATABASE_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="TEST_DATABASE_URL is not set")

# Long enough for a loaded 2-core CI machine to deliver what it would deliver; short enough to keep this file fast.
QUIET = 0.2
PATIENCE = 2.0


class Echo:
    """A TCP echo server in the test's own loop, counting the connections that reach it."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._echo, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    server = Echo()
    await server.start()
    yield server
    await server.stop()


async def connect(proxy: TcpProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(proxy.host, proxy.port), PATIENCE)


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bytes:
    writer.write(data)
    return await asyncio.wait_for(reader.readexactly(len(data)), PATIENCE)


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 0.5) == b""
    except ConnectionResetError:
        return True


async def refused(proxy: TcpProxy) -> bool:
    """The connection is reset, whether before the client's connect call returns or just after."""
    try:
        reader, writer = await connect(proxy)
    except ConnectionResetError:
        return True
    try:
        return await closed_by_peer(reader)
    finally:
        writer.close()


async def test_forward_relays_bytes_both_ways_and_counts_them(echo: Echo) -> None:
    with TcpProxy("127.0.0.1", echo.port) as proxy:
        reader, writer = await connect(proxy)

        assert await exchange(reader, writer, b"ping") == b"ping"
        await proxy.wait_for_connections_async(1)

        assert (proxy.bytes_to_target, proxy.bytes_to_client) == (4, 4)
        assert (proxy.open_connections, proxy.accepted, echo.accepted) == (1, 1, 1)
        writer.close()


async def test_blackhole_holds_bytes_of_an_open_connection_until_forward(echo: Echo) -> None:
    with TcpProxy("127.0.0.1", echo.port) as proxy:
        reader, writer = await connect(proxy)
        assert await exchange(reader, writer, b"ping") == b"ping"

        proxy.blackhole()
        writer.write(b"held")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(4), QUIET)
        assert proxy.bytes_to_target == 4
        assert not reader.at_eof()

        proxy.forward()
        assert await asyncio.wait_for(reader.readexactly(4), PATIENCE) == b"held"
        assert (proxy.bytes_to_target, proxy.bytes_to_client) == (8, 8)
        writer.close()


async def test_blackhole_accepts_new_connections_without_reaching_the_target(echo: Echo) -> None:
    with TcpProxy("127.0.0.1", echo.port) as proxy:
        proxy.blackhole()
        reader, writer = await connect(proxy)
        writer.write(b"hello")
        await proxy.wait_for_connections_async(1)

        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(5), QUIET)
        assert (echo.accepted, proxy.bytes_to_target) == (0, 0)

        proxy.forward()
        assert await asyncio.wait_for(reader.readexactly(5), PATIENCE) == b"hello"
        assert echo.accepted == 1
        writer.close()


async def test_blackhole_holds_a_close_until_forward(echo: Echo) -> None:
    with TcpProxy("127.0.0.1", echo.port) as proxy:
        reader, writer = await connect(proxy)
        assert await exchange(reader, writer, b"ping") == b"ping"

        proxy.blackhole()
        writer.write(b"last")
        writer.write_eof()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(), QUIET)

        proxy.forward()
        assert await asyncio.wait_for(reader.read(), PATIENCE) == b"last"
        writer.close()


async def test_refuse_resets_open_connections_and_new_ones_until_forward(echo: Echo) -> None:
    with TcpProxy("127.0.0.1", echo.port) as proxy:
        reader, writer = await connect(proxy)
        assert await exchange(reader, writer, b"ping") == b"ping"

        proxy.refuse()
        assert await closed_by_peer(reader)
        assert await refused(proxy)
        assert proxy.open_connections == 0

        proxy.forward()
        again_reader, again_writer = await connect(proxy)
        assert await exchange(again_reader, again_writer, b"back") == b"back"
        for w in (writer, again_writer):
            w.close()


def test_wait_for_connections_times_out_when_too_few_are_open(echo: Echo) -> None:
    with TcpProxy("127.0.0.1", echo.port) as proxy, pytest.raises(TimeoutError, match="0 client connections"):
        proxy.wait_for_connections(1, timeout=0.05)


def test_modes_switch_from_a_sync_test_and_the_proxy_stops_cleanly(echo: Echo) -> None:
    proxy = TcpProxy("127.0.0.1", echo.port).start()
    for mode in ("blackhole", "refuse", "forward"):
        getattr(proxy, mode)()
        assert proxy.mode == mode
    proxy.stop()

    with pytest.raises(RuntimeError, match="not running"):
        proxy.forward()


# -- PostgreSQL through the proxy -------------------------------------------------------------------------------


@pytest.fixture
def pg() -> Iterator[tuple[TcpProxy, str]]:
    """A proxy in front of the test PostgreSQL, and a DSN for asyncpg that goes through it."""
    assert PG_URL is not None
    url = make_url(PG_URL).set(drivername="postgresql")
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        yield proxy, url.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)


@needs_pg
async def test_postgres_query_goes_through_the_proxy_in_forward_mode(pg: tuple[TcpProxy, str]) -> None:
    proxy, dsn = pg
    conn = await asyncpg.connect(dsn, timeout=PATIENCE)
    try:
        assert await conn.fetchval("SELECT 41 + 1") == 42
    finally:
        await conn.close()
    assert proxy.accepted == 1
    assert proxy.bytes_to_target > 0
    assert proxy.bytes_to_client > 0


@needs_pg
async def test_postgres_query_times_out_during_blackhole_and_a_new_one_works_after_forward(
    pg: tuple[TcpProxy, str],
) -> None:
    proxy, dsn = pg
    conn = await asyncpg.connect(dsn, timeout=PATIENCE)
    proxy.blackhole()

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await conn.fetchval("SELECT 1", timeout=0.5)
    with pytest.raises(TimeoutError):
        await asyncpg.connect(dsn, timeout=0.5)
    assert time.monotonic() - started < 1.5

    proxy.forward()
    fresh = await asyncpg.connect(dsn, timeout=PATIENCE)
    try:
        assert await fresh.fetchval("SELECT 2", timeout=PATIENCE) == 2
    finally:
        await fresh.close()
        conn.terminate()


@needs_pg
async def test_postgres_refuse_fails_new_connections_fast_and_kills_open_ones(pg: tuple[TcpProxy, str]) -> None:
    proxy, dsn = pg
    conn = await asyncpg.connect(dsn, timeout=PATIENCE)
    assert await conn.fetchval("SELECT 1") == 1

    proxy.refuse()
    started = time.monotonic()
    with pytest.raises(ConnectionResetError):
        await asyncpg.connect(dsn, timeout=PATIENCE)
    assert time.monotonic() - started < 0.5
    while not conn.is_closed():  # the reset reaches the open connection's protocol on its own
        assert time.monotonic() - started < 0.5
        await asyncio.sleep(0.01)
    with pytest.raises(asyncpg.InterfaceError, match="connection is closed"):
        await conn.fetchval("SELECT 1")

    proxy.forward()
    fresh = await asyncpg.connect(dsn, timeout=PATIENCE)
    try:
        assert await fresh.fetchval("SELECT 3") == 3
    finally:
        await fresh.close()


# -- SQLite locked by another process ---------------------------------------------------------------------------


def make_db(path: Path, journal_mode: str = "wal") -> None:
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute(f"PRAGMA journal_mode={journal_mode}").fetchone()[0] == journal_mode
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()


def write(path: Path) -> None:
    with closing(sqlite3.connect(path, timeout=0.1)) as conn:
        conn.execute("INSERT INTO t VALUES (2)")
        conn.commit()


def read(path: Path) -> int:
    with closing(sqlite3.connect(path, timeout=0.1)) as conn:
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])


def test_lock_sqlite_blocks_writers_but_not_readers_in_wal_mode(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    make_db(db)

    with lock_sqlite(db, 10) as lock:
        assert lock.held
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            write(db)
        assert read(db) == 1

    assert not lock.held
    write(db)
    assert read(db) == 2


def test_lock_sqlite_releases_by_itself_after_seconds(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    make_db(db)

    with lock_sqlite(db, 0.2) as lock:
        lock.process.wait(timeout=PATIENCE)
        write(db)

    assert read(db) == 2


def test_lock_sqlite_exclusive_blocks_readers_in_rollback_journal_mode(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    make_db(db, journal_mode="delete")

    with lock_sqlite(db, 10, exclusive=True), pytest.raises(sqlite3.OperationalError, match="database is locked"):
        read(db)

    assert read(db) == 1
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name LIKE '_fault_lock%'").fetchall() == []


def test_lock_sqlite_fails_when_the_lock_is_taken_elsewhere(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    make_db(db)

    with (
        lock_sqlite(db, 10),
        pytest.raises(RuntimeError, match="database is locked"),
        lock_sqlite(db, 10, acquire_timeout=0.1),
    ):
        pass
