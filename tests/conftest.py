"""Shared fixtures: the fake D7 server and clients pointed at it."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.d7 import D7Client
from tests.fakes.d7 import TOKEN, FakeD7
from tests.fakes.slack import FakeSlack


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``scripts/test`` runs two workers), each worker's PostgreSQL tests get a database of their
    own (``<TEST_DATABASE_URL's database>_gw0``, …): they drop and create tables, and two sharing one would break
    each other. Set before any test module reads ``TEST_DATABASE_URL``."""
    worker, url = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("TEST_DATABASE_URL")
    if worker and url:
        os.environ["TEST_DATABASE_URL"] = asyncio.run(_database_of_its_own(url, worker))


async def _database_of_its_own(url: str, worker: str) -> str:
    import asyncpg  # the bot's own PostgreSQL driver

    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/') or 'postgres'}_{worker}"
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1), timeout=10)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # made by a run a moment ago
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated database: SQLite in ``tmp_path``, or PostgreSQL at ``TEST_DATABASE_URL`` (its tables dropped
    first; skipped when it is not set)."""
    from bot.storage.engine import create_engine, migrate
    from tests.harness import reset_postgres

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'bot.db'}"
    else:
        url = os.environ.get("TEST_DATABASE_URL", "")  # read now: a worker's own (``pytest_configure``)
        if not url:
            pytest.skip("TEST_DATABASE_URL is not set")
        await reset_postgres(url)
    engine = create_engine(url)
    await migrate(engine)
    yield engine
    await engine.dispose()


class Sleeps(list[float]):
    """Stands in for asyncio.sleep in retry loops: records each delay and returns at once."""

    def __init__(self, on_sleep: Callable[[float], None] | None = None) -> None:
        super().__init__()
        self.on_sleep = on_sleep

    async def __call__(self, delay: float) -> None:
        self.append(delay)
        if self.on_sleep is not None:
            self.on_sleep(delay)


@pytest.fixture
def fake_d7() -> Iterator[FakeD7]:
    with FakeD7() as server:
        yield server


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    """A fake Slack Web API where the bot is in #ops (C0OPS) and the policy's user group exists, empty."""
    with FakeSlack() as fake:
        fake.add_channel("C0OPS")
        fake.state.usergroups["S0SUPPORT"] = []
        yield fake


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def d7(fake_d7: FakeD7, sleeps: Sleeps) -> AsyncIterator[D7Client]:
    client = D7Client(SecretStr(TOKEN), base_url=fake_d7.url, sleep=sleeps)
    yield client
    await client.aclose()


@pytest.fixture
async def make_d7(sleeps: Sleeps) -> AsyncIterator[Callable[..., D7Client]]:
    """Build clients with custom options; closed at teardown."""
    made: list[D7Client] = []

    def make(base_url: str, token: str = TOKEN, **kwargs: Any) -> D7Client:
        kwargs.setdefault("sleep", sleeps)
        client = D7Client(SecretStr(token), base_url=base_url, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


def timeout(read: float) -> httpx.Timeout:
    return httpx.Timeout(connect=2.0, read=read, write=2.0, pool=2.0)


@pytest.fixture
def unpaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bot's posts not paced at Slack's per-channel rate (for tests whose fake Slack has ``relax_rates()``:
    they are about something else, and 80 posts in one channel would take 80 s)."""
    monkeypatch.setenv("SLACK_CHANNEL_PACE", "0")
