"""The database failing under the real app: PostgreSQL behind a proxy that drops or refuses traffic, SQLite locked
by a second process or refusing writes. Acks stay under Slack's 3 s, no text goes twice, D7's answers are never
lost, and every result reaches its thread once the database is back. Outages are a few seconds here (the behaviour
does not depend on their length) to keep CI short."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot.domain.sends import RefusalKind, SendState
from bot.storage.engine import create_engine
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.faults import TcpProxy, lock_sqlite
from tests.harness import App, reset_postgres, running_app

PG_URL = os.environ.get("TEST_DATABASE_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="TEST_DATABASE_URL is not set")
SMS = "/messages/v1/send"
NOT_RECORDED = "could not record your request"


@asynccontextmanager
async def app_behind_proxy(slack: FakeSlack, d7: FakeD7, tmp: Path) -> AsyncIterator[tuple[App, TcpProxy]]:
    """The bot on PostgreSQL through a proxy the test can cut."""
    assert PG_URL is not None
    await reset_postgres(PG_URL)
    url = sa.engine.make_url(PG_URL)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        async with running_app(slack, d7, tmp, DATABASE_URL=proxied) as app:
            yield app, proxy


async def timed_command(app: App, text: str) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    response = await app.command("/sms", text)
    assert response.status_code == 200
    return time.monotonic() - started, response.json() if response.content else {}


def contents(d7: FakeD7) -> list[str]:
    return [b["messages"][0]["content"] for b in d7.bodies(SMS)]


def results(slack: FakeSlack) -> list[dict[str, Any]]:
    return [p for p in slack.of("chat.postMessage") if "thread_ts" in p]


async def until(condition: Any, seconds: float) -> float:
    """Wait (polling) until ``condition()`` holds; the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, "timed out"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


# ------------------------------------------------------------ PostgreSQL stops answering


@needs_pg
async def test_postgres_dropping_packets_at_ack_time_answers_in_time_and_never_texts_twice(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    async with app_behind_proxy(slack, fake_d7, tmp_path) as (app, proxy):
        proxy.blackhole()
        first = await asyncio.gather(*(timed_command(app, f"+14155550100 outage {i}") for i in range(5)))
        await asyncio.sleep(1)
        proxy.forward()  # whatever was on its way is delivered now, late
        # The person was told nothing was sent, so they send again.
        again = await asyncio.gather(*(timed_command(app, f"+14155550100 outage {i}") for i in range(5)))
        await app.settle()
        records = await app.relay.storage.sends.audit()

    assert all(took < 3 for took, _ in first), [took for took, _ in first]
    assert all(NOT_RECORDED in answer["text"] for _, answer in first)
    assert all(took < 3 and answer == {} for took, answer in again)
    assert sorted(contents(fake_d7)) == sorted(f"outage {i}" for i in range(5))  # once each: the retries
    late = [r for r in records if r.state is SendState.DENIED]
    assert all(r.refusal_kind is RefusalKind.UNRECORDED for r in late)  # an insert that landed late is not sent
    assert len([r for r in records if r.state is SendState.ACCEPTED]) == 5


@needs_pg
@pytest.mark.parametrize("fault", ["refuse", "blackhole"])
async def test_postgres_cut_while_d7_answers_keeps_every_answer_and_tells_it(
    slack: FakeSlack, tmp_path: Path, fault: str
) -> None:
    with FakeD7(delay=1.0) as d7:
        async with app_behind_proxy(slack, d7, tmp_path) as (app, proxy):
            for i in range(5):
                await app.command("/sms", f"+14155550100 cut {i}")
            await until(lambda: len(d7.requests) == 5, 10)
            getattr(proxy, fault)()  # D7 answers during the outage
            await asyncio.sleep(6)
            proxy.forward()
            recovered = time.monotonic()
            await until(lambda: len(results(slack)) == 5, 40)
            told_after = time.monotonic() - recovered
            await app.settle()
            records = await app.relay.storage.sends.audit()

    assert told_after < 30
    assert [r.state for r in records] == [SendState.ACCEPTED] * 5  # not 'unknown'
    assert {r.request_id for r in records} == set(d7.sends)
    for record in records:
        (result,) = [p for p in results(slack) if f"request_id `{record.request_id}`" in p["text"]]
        assert result["thread_ts"] == record.thread_ts


# ------------------------------------------------------------ SQLite locked by another process


async def test_sqlite_locked_at_ack_time_answers_within_the_deadline_and_the_loop_goes_on(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    async with running_app(slack, fake_d7, tmp_path) as app:
        with lock_sqlite(tmp_path / "bot.db", 8):
            command = asyncio.create_task(timed_command(app, "+14155550100 while locked"))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            health = await app.http.get(f"{app.url}/healthz")  # the loop is not blocked by the wait
            health_took = time.monotonic() - started
            took, answer = await command
        again = await app.command("/sms", "+14155550100 after the lock")
        await app.settle()

    assert took < 3
    assert NOT_RECORDED in answer["text"]
    assert health_took < 1.5
    assert (health.status_code, health.json()["database_writes"]) == (503, "locked")
    assert again.status_code == 200
    assert contents(fake_d7) == ["after the lock"]


async def test_sqlite_locked_while_d7_answers_keeps_every_answer_and_tells_it(slack: FakeSlack, tmp_path: Path) -> None:
    with FakeD7(delay=1.0) as d7:
        async with running_app(slack, d7, tmp_path) as app:
            for i in range(5):
                await app.command("/sms", f"+14155550100 locked {i}")
            await until(lambda: len(d7.requests) == 5, 10)
            with lock_sqlite(tmp_path / "bot.db", 6):
                await asyncio.sleep(6)
            released = time.monotonic()
            await until(lambda: len(results(slack)) == 5, 40)
            told_after = time.monotonic() - released
            await app.settle()
            records = await app.relay.storage.sends.audit()

    assert told_after < 30
    assert [r.state for r in records] == [SendState.ACCEPTED] * 5
    assert {r.request_id for r in records} == set(d7.sends)


# ------------------------------------------------------------ SQLite refusing writes (disk full, read-only)


@contextmanager
def writes_refused(error: str = "database or disk is full") -> Iterator[None]:
    """Every INSERT, UPDATE and DELETE fails as SQLite fails them when the disk is full (reads still work)."""

    def refuse(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            raise sqlite3.OperationalError(error)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", refuse)
    try:
        yield
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", refuse)


@pytest.mark.parametrize("error", ["database or disk is full", "attempt to write a readonly database"])
async def test_sqlite_refusing_writes_refuses_new_sends_keeps_answers_and_tells_them_once_writable(
    slack: FakeSlack, tmp_path: Path, error: str
) -> None:
    with FakeD7(delay=1.0) as d7:
        async with running_app(slack, d7, tmp_path) as app:
            for i in range(3):
                await app.command("/sms", f"+14155550100 in flight {i}")
            await until(lambda: len(d7.requests) == 3, 10)
            with writes_refused(error):
                refused = await app.command("/sms", "+14155550100 new")
                await asyncio.sleep(2)  # D7 answers while nothing can be written
                health = await app.http.get(f"{app.url}/healthz")
            freed = time.monotonic()
            await until(lambda: len(results(slack)) == 3, 40)
            told_after = time.monotonic() - freed
            await app.settle()
            records = await app.relay.storage.sends.audit()

    assert NOT_RECORDED in refused.json()["text"]
    assert (health.status_code, health.json()["database_writes"]) == (503, "failing")
    assert health.json()["last_write_error"] == "OperationalError"
    assert told_after < 30
    assert [r.state for r in records] == [SendState.ACCEPTED] * 3
    assert "new" not in contents(d7)


# ------------------------------------------------------------ what a database error may say


async def test_database_errors_carry_no_statement_parameters(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_app(slack, fake_d7, tmp_path) as app:
        with sqlite3.connect(tmp_path / "bot.db") as conn:  # the table goes away under the bot
            conn.execute("ALTER TABLE sends RENAME TO sends_away")
        response = await app.command("/sms", "+14155550177 the secret text")
        with sqlite3.connect(tmp_path / "bot.db") as conn:
            conn.execute("ALTER TABLE sends_away RENAME TO sends")

    assert NOT_RECORDED in response.json()["text"]
    for needle in ("4155550177", "the secret text", "hooks", "/response/"):
        assert needle not in caplog.text


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=needs_pg)])
async def test_every_engine_hides_parameters_from_its_errors(backend: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}" if backend == "sqlite" else str(PG_URL)
    engine = create_engine(url)
    try:
        with pytest.raises(sa.exc.DBAPIError) as info:
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT * FROM no_such_table WHERE x = :x"), {"x": "+14155550177"})
    finally:
        await engine.dispose()
    assert "+14155550177" not in str(info.value)
    assert "parameters hidden" in str(info.value)


# ------------------------------------------------------------ what the database refuses


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=needs_pg)])
async def test_a_nul_character_never_reaches_the_database(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path, backend: str
) -> None:
    extra: dict[str, Any] = {}
    if backend == "postgresql":
        assert PG_URL is not None
        await reset_postgres(PG_URL)
        extra["DATABASE_URL"] = PG_URL
    async with running_app(slack, fake_d7, tmp_path, **extra) as app:
        response = await app.command("/sms", "+14155550100 disk\x00 full")
        await app.settle()
        (record,) = await app.relay.storage.sends.audit()

    assert (response.status_code, response.content) == (200, b"")
    assert record.request.text == "disk full"
    assert contents(fake_d7) == ["disk full"]
