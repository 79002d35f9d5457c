"""Commands that send are acked without Bolt's dispatch (``QuickSends``), with Bolt's checks and Bolt's answer;
everything else still goes through Bolt."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from bot.app import open_relay
from bot.serving import make_socket_handler
from bot.slack import messages
from bot.slack.listeners.commands import QuickSends
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import APP_TOKEN, FakeSlack
from tests.fakes.socket_mode import FakeSocketMode, envelope
from tests.harness import POLICY, App, database_down, running_app, settings_for, sign, slash_command


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel("C0OPS")
        fake.add_user("U0ALICE", "alice", "+1 415 555 0100")
        yield fake


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path) as running:
        yield running


def count_bolt(app: App) -> list[Any]:
    """Every request Bolt dispatches, from now on."""
    seen: list[Any] = []
    dispatch = app.relay.bolt.async_dispatch

    async def counted(req: Any) -> Any:
        seen.append(req)
        return await dispatch(req)

    app.relay.bolt.async_dispatch = counted  # type: ignore[method-assign]
    return seen


async def test_a_send_is_acked_without_bolt_and_answered_as_bolt_answers(
    app: App, fake_d7: FakeD7, monkeypatch: pytest.MonkeyPatch
) -> None:
    bolt = count_bolt(app)
    quick = await app.command("/sms", "+14155550100 disk full")
    assert bolt == []

    async def declined(self: QuickSends, *args: Any) -> None:
        return None

    monkeypatch.setattr(QuickSends, "answer", declined)
    through_bolt = await app.command("/sms", "+14155550100 disk full again")
    assert len(bolt) == 1
    assert (quick.status_code, quick.text, quick.headers["content-type"]) == (
        through_bolt.status_code,
        through_bolt.text,
        through_bolt.headers["content-type"],
    )
    assert (quick.status_code, quick.text) == (200, "")
    await app.settle()
    assert sorted(b["messages"][0]["content"] for b in fake_d7.bodies("/messages/v1/send")) == [
        "disk full",
        "disk full again",
    ]


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (slash_command("/sms", "+14155550100 hi"), {"X-Slack-Signature": "v0=" + "0" * 64}, 401),
        (slash_command("/sms", "+14155550100 hi"), {"X-Slack-Request-Timestamp": "1000000000"}, 401),
        (slash_command("/sms", "+14155550100 hi").replace(b"team_id=T0TEAM", b"team_id=T0OTHER"), None, 401),
        (slash_command("/sms", "help"), None, 200),
        (slash_command("/sms", "status 0123abcd"), None, 200),
        (slash_command("/sms", ""), None, 200),
        (slash_command("/sms", "no recipient here"), None, 200),
        (slash_command("/sms", "+14155550100 hi").replace(b"&user_id=U0ALICE", b""), None, 200),
        (slash_command("/sms", "+14155550100 hi") + b"&ssl_check=1", None, 200),
    ],
    ids=["bad-signature", "stale", "other-workspace", "help", "status", "compose", "no-recipient", "malformed", "ssl"],
)
async def test_anything_but_a_valid_send_goes_through_bolt(
    app: App, body: bytes, headers: dict[str, str] | None, status: int
) -> None:
    bolt = count_bolt(app)
    signed = sign(body)
    if headers is not None and "X-Slack-Request-Timestamp" in headers:
        signed = sign(body, timestamp=int(headers["X-Slack-Request-Timestamp"]))
    elif headers is not None:
        signed |= headers
    response = await app.post(body, headers=signed)
    assert response.status_code == status
    assert len(bolt) == 1


async def test_a_send_the_database_cannot_keep_is_answered_in_the_ack(app: App) -> None:
    bolt = count_bolt(app)
    with database_down():
        response = await app.command("/sms", "+14155550100 disk full")
    assert bolt == []
    assert response.status_code == 200
    assert response.json()["text"] == messages.cannot_record()
    assert response.json()["response_type"] == "ephemeral"


async def test_over_socket_mode_a_send_is_acked_without_bolt_and_the_rest_through_it(
    slack: FakeSlack, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    settings = settings_for(slack, None, policy, tmp_path, SLACK_APP_TOKEN=APP_TOKEN, SLACK_SIGNING_SECRET=None)
    with FakeSocketMode() as socket:
        slack.socket_mode_url = socket.ws_url
        async with open_relay(settings) as relay:
            handler = make_socket_handler(relay)
            assert handler is not None
            seen: list[Any] = []
            dispatch = relay.bolt.async_dispatch

            async def counted(req: Any) -> Any:
                seen.append(req)
                return await dispatch(req)

            relay.bolt.async_dispatch = counted  # type: ignore[method-assign]
            await handler.connect_async()  # type: ignore[no-untyped-call]
            try:
                await asyncio.to_thread(socket.wait_connected, 10)
                send = envelope("slash_commands", dict(parse_qsl(slash_command("/sms", "+14155550100 hi").decode())))
                usage = envelope("slash_commands", dict(parse_qsl(slash_command("/sms", "help").decode())))
                acks = await asyncio.to_thread(socket.send, [send, usage], 10)
            finally:
                await handler.close_async()  # type: ignore[no-untyped-call]

    assert len(acks) == 2
    assert socket.acks[send["envelope_id"]] == {"envelope_id": send["envelope_id"]}  # Bolt's ack of an empty ack()
    assert "/sms" in socket.acks[usage["envelope_id"]]["payload"]["text"]  # the usage, answered by Bolt
    assert len(seen) == 1
