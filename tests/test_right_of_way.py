"""Slack's requests before background work: while a request waits for its answer the outbox holds its steps (a
trickle goes through), and the way opens once no request has waited for a moment. Then the group commit that
groups: intents arriving while the database is busy share a commit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from slack_bolt.async_app import AsyncAck

from bot.domain.models import Origin, RecipientRef, RefKind, SendRequest, Surface, Via
from bot.storage import Storage
from bot.storage import database as database_module
from bot.storage.database import Database
from bot.storage.engine import create_engine, migrate
from bot.storage.schema import sends
from bot.tasks import RightOfWay
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import App, running_app

SMS = "/messages/v1/send"


async def done_within(tasks: list[asyncio.Task[None]], seconds: float) -> int:
    await asyncio.wait(tasks, timeout=seconds)
    return sum(task.done() for task in tasks)


async def test_the_way_is_open_when_no_request_waits() -> None:
    way = RightOfWay(trickle=10.0)
    async with asyncio.timeout(1):
        await way.give_way()
    assert way.held == 0


async def test_held_while_a_request_waits_one_let_through_per_trickle_all_once_quiet() -> None:
    way = RightOfWay(trickle=0.3, quiet=0.05)
    answered = way.arrived()
    waiting = [asyncio.create_task(way.give_way()) for _ in range(4)]
    assert await done_within(waiting, 0.1) == 0  # held
    assert way.held == 4
    assert await done_within(waiting, 0.3) == 1  # the first trickle: one, the oldest
    assert waiting[0].done()

    answered()
    answered()  # once is enough: a second call changes nothing
    assert way.requests == 0
    assert await done_within(waiting, 0.02) == 1  # not yet: a request may come right after the answer
    assert await done_within(waiting, 1.0) == 4  # quiet for 50 ms: all of them
    assert way.open


async def test_a_request_arriving_right_after_an_answer_keeps_the_way_closed() -> None:
    way = RightOfWay(trickle=10.0, quiet=0.05)
    first = way.arrived()
    waiting = [asyncio.create_task(way.give_way()) for _ in range(2)]
    first()
    second = way.arrived()  # the next request of the burst, before the way opened
    assert await done_within(waiting, 0.2) == 0
    second()
    assert await done_within(waiting, 1.0) == 2


async def test_a_request_never_answered_holds_the_way_for_a_bounded_time() -> None:
    way = RightOfWay(trickle=10.0, quiet=0.01, hold_at_most=0.2)
    way.arrived()  # its answer never comes (a listener stuck on Slack)
    waiting = asyncio.create_task(way.give_way())
    assert await done_within([waiting], 0.1) == 0
    assert await done_within([waiting], 1.0) == 1
    assert way.requests == 0


async def test_a_cancelled_waiter_does_not_take_a_turn() -> None:
    way = RightOfWay(trickle=0.1, quiet=10.0)
    way.arrived()
    first, second = asyncio.create_task(way.give_way()), asyncio.create_task(way.give_way())
    await asyncio.sleep(0)
    first.cancel()
    assert await done_within([second], 1.0) == 1  # the trickle's turn went to the live one
    assert first.cancelled()


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path) as running:
        yield running


async def test_a_send_waits_while_another_slack_request_waits_for_its_answer(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    way = app.relay.right_of_way
    way.trickle = 60.0  # nothing trickles through during the test
    way.hold_at_most = 60.0
    # A Slack request that waits for its answer (a listener on a slow look-up; here, until the test lets it go).
    released = asyncio.Event()

    @app.relay.bolt.command("/wait")
    async def slow(ack: AsyncAck) -> None:
        await released.wait()
        await ack()

    waiting = asyncio.create_task(app.command("/wait", ""))
    try:
        async with asyncio.timeout(5):
            while way.requests != 1:  # noqa: ASYNC110 - the request is on its way
                await asyncio.sleep(0.005)
        assert (await app.http.get(f"{app.url}/healthz")).status_code == 200  # not a Slack request: not counted
        assert way.requests == 1

        response = await app.command("/sms", "+14155550100 Disk full on db-1")
        assert response.status_code == 200  # acked at once: the intent is recorded
        await asyncio.sleep(0.3)
        assert fake_d7.bodies(SMS) == []  # ...and waits: nothing announced, nothing at D7
        assert slack.of("chat.postMessage") == []
        async with app.relay.storage.database.engine.connect() as conn:
            assert (await conn.execute(sa.select(sends.c.state))).scalars().all() == ["pending"]
        assert not waiting.done()
    finally:
        released.set()
    assert (await waiting).status_code == 200  # answered: the way opens
    await app.settle()
    assert way.requests == 0
    assert [body["messages"][0]["content"] for body in fake_d7.bodies(SMS)] == ["Disk full on db-1"]
    announcement, result = slack.of("chat.postMessage")
    assert "Disk full on db-1" in announcement["text"]
    assert result["thread_ts"] == slack.posted_ts(0)


async def test_a_client_that_stalls_mid_body_holds_nothing(app: App, fake_d7: FakeD7) -> None:
    way = app.relay.right_of_way
    way.trickle = 60.0
    url = urlsplit(app.url)
    assert url.hostname is not None
    assert url.port is not None
    _, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(
            b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"X-Slack-Request-Timestamp: %d\r\nX-Slack-Signature: v0=00\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4096\r\n\r\ntoken=x&"
            % int(time.time())
        )
        await writer.drain()
        response = await app.command("/sms", "+14155550100 Disk full on db-1")
        await app.settle()  # not held: settling would time out
        assert response.status_code == 200
        assert way.requests == 0
        assert [body["messages"][0]["content"] for body in fake_d7.bodies(SMS)] == ["Disk full on db-1"]
    finally:
        writer.close()
        await writer.wait_closed()


def request(key: str) -> SendRequest:
    return SendRequest(
        via=Via.SMS,
        origin=Origin(Surface.COMMAND, "T0TEAM", "U0ALICE", "C0OPS", response_url="https://hooks.example/r"),
        recipients=(RecipientRef(RefKind.NUMBER, "+14155550100"),),
        text="hello",
        idempotency_key=key,
    )


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    engine = create_engine(f"sqlite:///{tmp_path / 'bot.db'}")
    await migrate(engine)
    db = Database(engine)
    try:
        yield db
    finally:
        await db.aclose()


async def test_intents_arriving_while_the_database_is_busy_share_a_commit(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits: list[int] = []
    assert database._sync is not None
    sa.event.listen(database._sync, "commit", lambda conn: commits.append(1))
    store = Storage.on(database).sends

    async def record(n: int) -> bool:
        return await store.record(request(f"key-{n}"), timedelta(minutes=15)) is not None

    assert await record(0)  # an idle bot commits at once, alone
    assert len(commits) == 1

    # A burst: each request on a loop turn of its own (as uvicorn hands them over), all within the linger.
    async def arriving(n: int) -> bool:
        for _ in range(n):
            await asyncio.sleep(0)
        return await record(n)

    monkeypatch.setattr(database_module, "GROUP_LINGER", 0.1)  # a pause of the test machine does not split it
    assert all(await asyncio.gather(*(arriving(n) for n in range(1, 21))))
    assert len(commits) - 1 <= 2  # without the linger: one commit each
    async with database.engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(sends))).scalar() == 21
