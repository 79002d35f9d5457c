"""Shared fixtures: the fake D7 server and clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bot.d7 import D7Client
from tests.fakes.d7 import TOKEN, FakeD7
from tests.fakes.slack import FakeSlack


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
