"""``Retry-After`` values no server should send (``inf``, ``nan``, huge, negative, not a number), from D7 and from
Slack: never an exception, never an endless wait. D7's through its client and the whole app on the fake D7; Slack's
through slack_sdk's own Web API client on a small loopback server that answers 429 with any header text."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.app import SLACK_RATE_LIMIT_RETRIES, make_slack_client
from bot.d7 import D7Client
from bot.d7.retry import MAX_RETRY_AFTER, parse_retry_after
from bot.domain.errors import D7RateLimitedError
from bot.slack import conversation
from bot.slack.conversation import ChannelBusy, ChannelPacer
from bot.slack.retry import MAX_RETRY_AFTER as SLACK_MAX_RETRY_AFTER
from bot.slack.retry import UNUSABLE_RETRY_AFTER, CappedRateLimitRetryHandler
from tests.conftest import Sleeps
from tests.fakes.d7 import FakeD7, Reply
from tests.fakes.server import LoopbackServer
from tests.fakes.slack import BOT_TOKEN, FakeSlack
from tests.harness import running_app, settings_for

SMS = "/messages/v1/send"
ALICE = "+14155550100"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = 24 * 3600.0


# ---------------------------------------------------------------- D7


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("2", 2.0),
        ("0", 0.0),
        (" 12.5 ", 12.5),
        ("86400", DAY),
        ("86401", DAY),
        ("99999999999", DAY),
        ("1e400", DAY),
        ("inf", DAY),
        ("Infinity", DAY),
        ("nan", None),
        ("NaN", None),
        ("-5", None),
        ("-inf", None),
        ("abc", None),
        ("", None),
        ("   ", None),
        (None, None),
        ("Sun, 01 Mar 2026 12:02:00 GMT", 120.0),
        ("Sun, 01 Mar 2026 11:00:00 GMT", 0.0),  # a date already past: now
        ("Fri, 31 Dec 9999 23:59:59 GMT", DAY),
    ],
)
def test_parse_retry_after_is_finite_capped_and_none_when_unusable(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


def test_the_d7_retry_after_cap_is_one_day() -> None:
    assert MAX_RETRY_AFTER == DAY


@pytest.mark.parametrize("header", ["inf", "1e400", "99999999999"])
async def test_d7_429_with_an_endless_retry_after_hands_back_one_day_without_waiting(
    d7: D7Client, fake_d7: FakeD7, sleeps: Sleeps, header: str
) -> None:
    fake_d7.enqueue(Reply(429, {"detail": "slow down"}, headers={"Retry-After": header}))

    with pytest.raises(D7RateLimitedError) as info:
        await d7.send_sms([ALICE], "x")

    assert info.value.retry_after == DAY
    assert sleeps == []
    assert len(fake_d7.requests) == 1


@pytest.mark.parametrize("header", ["nan", "-5", "soon"])
async def test_d7_429_with_an_unusable_retry_after_falls_back_to_the_clients_backoff(
    d7: D7Client, fake_d7: FakeD7, sleeps: Sleeps, header: str
) -> None:
    fake_d7.enqueue(Reply(429, {"detail": "slow down"}, headers={"Retry-After": header}))

    result = await d7.send_sms([ALICE], "x")

    assert result.accepted
    assert len(sleeps) == 1
    assert 0.25 <= sleeps[0] <= 0.5  # the first step of CLIENT_RETRY's backoff (0.5 s, equal jitter)
    assert len(fake_d7.sends) == 1


async def test_a_send_d7_tells_to_retry_after_inf_is_not_sent_and_the_user_is_told(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    fake_d7.enqueue(Reply(429, {"detail": "slow down"}, headers={"Retry-After": "inf"}))
    async with running_app(slack, fake_d7, tmp_path) as app:
        ack = await app.command("/sms", f"{ALICE} disk full")
        await app.settle()

    assert ack.status_code == 200
    assert fake_d7.sends == {}
    *_, reply = slack.of("chat.postMessage")
    assert reply["text"] == (
        ":x: *Not sent:* D7 was unavailable (HTTP 429) after several attempts. Nothing was sent; please try again later."
    )


# ---------------------------------------------------------------- Slack


class RateLimitedSlack(LoopbackServer):
    """``chat.postMessage`` answers 429 with each scripted ``Retry-After`` text in turn (None: no header), then
    ``ok``. The fake Slack writes the header as an integer, so it cannot say ``inf``."""

    def __init__(self, *retry_afters: str | None) -> None:
        super().__init__()
        self.retry_afters = list(retry_afters)
        self.calls: list[float] = []  # monotonic time of each request

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/chat.postMessage", self._post)
        app.router.add_route("*", "/api/users.info", self._post)  # a look-up: the client's handler retries it
        return app

    async def _post(self, request: web.Request) -> web.Response:
        self.calls.append(time.monotonic())
        if self.retry_afters:
            value = self.retry_afters.pop(0)
            headers = {} if value is None else {"Retry-After": value}
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers=headers)
        return web.json_response({"ok": True, "channel": "C0OPS", "ts": "1.000001"})


@pytest.fixture
async def made_clients() -> AsyncIterator[list[AsyncWebClient]]:
    clients: list[AsyncWebClient] = []
    yield clients
    for client in clients:
        if client.session is not None:
            await client.session.close()


def client(server: LoopbackServer, sleeps: Sleeps, made: list[AsyncWebClient]) -> AsyncWebClient:
    made.append(
        AsyncWebClient(
            token=BOT_TOKEN,
            base_url=f"{server.url}/api/",
            retry_handlers=[CappedRateLimitRetryHandler(max_retry_count=SLACK_RATE_LIMIT_RETRIES, sleep=sleeps)],
        )
    )
    return made[-1]


@pytest.mark.parametrize(
    ("header", "wait"),
    [
        ("inf", SLACK_MAX_RETRY_AFTER),
        ("1e400", SLACK_MAX_RETRY_AFTER),
        ("99999999", SLACK_MAX_RETRY_AFTER),
        ("61", SLACK_MAX_RETRY_AFTER),
        ("nan", UNUSABLE_RETRY_AFTER),
        ("-3", UNUSABLE_RETRY_AFTER),
        ("soon", UNUSABLE_RETRY_AFTER),
        ("", UNUSABLE_RETRY_AFTER),
        (None, UNUSABLE_RETRY_AFTER),
        ("2", 2.0),
        ("1.5", 1.5),
    ],
)
async def test_slack_429_waits_a_capped_finite_time_then_posts(
    sleeps: Sleeps, made_clients: list[AsyncWebClient], header: str | None, wait: float
) -> None:
    with RateLimitedSlack(header) as server:
        answer = await client(server, sleeps, made_clients).chat_postMessage(channel="C0OPS", text="hi")

    assert answer["ok"] is True
    assert len(server.calls) == 2
    assert len(sleeps) == 1
    assert wait <= sleeps[0] < wait + 1  # plus up to a second of jitter, as slack_sdk's own handler adds


async def test_slack_429_from_the_fake_slack_with_a_huge_retry_after_waits_a_minute_at_most(
    slack: FakeSlack, sleeps: Sleeps, made_clients: list[AsyncWebClient]
) -> None:
    slack.rate_limit("chat.postMessage", times=2, retry_after=10**9)

    answer = await client(slack, sleeps, made_clients).chat_postMessage(channel="C0OPS", text="hi")

    assert answer["ok"] is True
    assert len(slack.of("chat.postMessage")) == 3
    assert [int(s) for s in sleeps] == [60, 60]


def bots_client(
    server: RateLimitedSlack, slack: FakeSlack, tmp_path: Path, made_clients: list[AsyncWebClient]
) -> AsyncWebClient:
    """The Slack client ``python -m bot`` builds, pointed at ``server`` (closed by the ``made_clients`` fixture)."""
    settings = settings_for(slack, None, tmp_path / "policy.yml", tmp_path, SLACK_API_URL=f"{server.url}/api/")
    made_clients.append(make_slack_client(settings))
    return made_clients[-1]


async def test_the_bots_slack_client_survives_retry_after_nan(
    slack: FakeSlack, tmp_path: Path, made_clients: list[AsyncWebClient]
) -> None:
    """The client ``python -m bot`` builds; slack_sdk's own handler raised ValueError here (``int("nan")``)."""
    with RateLimitedSlack("nan") as server:
        bots = bots_client(server, slack, tmp_path, made_clients)

        answer = await bots.users_info(user="U0ALICE")

    assert answer["ok"] is True
    first, second = server.calls
    assert UNUSABLE_RETRY_AFTER <= second - first < UNUSABLE_RETRY_AFTER + 1.5


async def test_the_bots_client_leaves_a_posts_429_to_the_channel_pacer_which_waits_it_out_in_turn(
    slack: FakeSlack, tmp_path: Path, made_clients: list[AsyncWebClient]
) -> None:
    """Posts are paced per channel: the client's handler would retry each 429 on its own, and a burst's posts
    would all come back at the same instant and meet the limit again."""
    with RateLimitedSlack("1") as server:
        bots = bots_client(server, slack, tmp_path, made_clients)
        with pytest.raises(SlackApiError) as raised:
            await bots.chat_postMessage(channel="C0OPS", text="hi")
    assert raised.value.response.status_code == 429
    assert len(server.calls) == 1  # not retried by the client

    with RateLimitedSlack("1") as server:
        bots = bots_client(server, slack, tmp_path, made_clients)
        answer = await ChannelPacer().run("C0OPS", lambda: bots.chat_postMessage(channel="C0OPS", text="hi"))
    assert answer["ok"] is True
    first, second = server.calls
    assert second - first >= 1.0  # after its Retry-After, in the channel's turn


async def test_the_bots_slack_client_retries_429s_with_the_capped_handler(
    slack: FakeSlack, tmp_path: Path, made_clients: list[AsyncWebClient]
) -> None:
    made_clients.append(make_slack_client(settings_for(slack, None, tmp_path / "policy.yml", tmp_path)))
    handlers = made_clients[0].retry_handlers

    (capped,) = [h for h in handlers if isinstance(h, CappedRateLimitRetryHandler)]
    assert capped.max_retry_count == SLACK_RATE_LIMIT_RETRIES


async def test_a_post_waits_for_its_channels_turn_at_most_paced_within_then_is_left_for_later(
    slack: FakeSlack, tmp_path: Path, made_clients: list[AsyncWebClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slack asking a channel to wait longer than a post may wait must not hold the worker (and other channels'
    sends) that long. (Slack's Retry-After is capped at a minute, shorter than PACED_WITHIN: a shorter wait here.)"""
    monkeypatch.setattr(conversation, "PACED_WITHIN", 30.0)
    with RateLimitedSlack("60") as server:
        bots = bots_client(server, slack, tmp_path, made_clients)
        started = time.monotonic()
        with pytest.raises(ChannelBusy, match="C0OPS"):
            await ChannelPacer().run("C0OPS", lambda: bots.chat_postMessage(channel="C0OPS", text="hi"))
    assert time.monotonic() - started < 3  # told at once: 60 s is past the 30 s a post may wait
    assert len(server.calls) == 1


@pytest.mark.parametrize(
    ("pace", "burst", "posts", "at_least", "at_most"), [(4.0, 2, 6, 1.0, 1.6), (0.0, 1, 50, 0.0, 0.5)]
)
async def test_a_channels_pace_is_the_pacers_own_and_zero_does_not_pace(
    pace: float, burst: int, posts: int, at_least: float, at_most: float
) -> None:
    """``SLACK_CHANNEL_PACE`` reaches the pacer: 6 posts at 4 a second after a burst of 2 take 1 s (4 posts past
    the burst); at 0, 50 posts go at once (a Slack-compatible API without the limit). Other channels never wait."""
    pacer = ChannelPacer(pace, burst)
    went: list[float] = []

    async def post() -> float:
        went.append(time.monotonic())
        return went[-1]

    started = time.monotonic()
    await asyncio.gather(*(pacer.run("C0OPS", post) for _ in range(posts)))
    took = time.monotonic() - started
    assert at_least <= took < at_most
    assert len(went) == posts
    other = time.monotonic()
    await pacer.run("C0OTHER", post)
    assert went[-1] - other < 0.1


def test_a_pace_below_zero_or_a_burst_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="posts_per_second >= 0"):
        ChannelPacer(-1.0)
    with pytest.raises(ValueError, match="burst >= 1"):
        ChannelPacer(1.0, 0)


class HangingUp(LoopbackServer):
    """Takes every call in, then hangs up without answering: the connection broke after the request was sent, so
    Slack may have carried it out."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._hang_up)
        return app

    async def _hang_up(self, request: web.Request) -> web.StreamResponse:
        self.calls.append(request.match_info["method"])
        await request.read()
        assert request.transport is not None
        request.transport.close()
        await asyncio.sleep(0.5)
        return web.Response()  # never reaches the client


async def test_a_post_whose_connection_broke_after_it_was_sent_is_not_posted_again_blindly(
    slack: FakeSlack, tmp_path: Path, made_clients: list[AsyncWebClient]
) -> None:
    """The soak's seed 23: slack_sdk's connection-error handler sent an announcement again whose first copy Slack had
    taken. The bot's client leaves a broken post to the caller (which looks for it first) and still retries a
    look-up, which changes nothing."""
    with HangingUp() as server:
        bots = bots_client(server, slack, tmp_path, made_clients)  # type: ignore[arg-type]
        with pytest.raises(aiohttp.ClientError):
            await bots.chat_postMessage(channel="C0OPS", text="once")
        assert server.calls == ["chat.postMessage"]
        with pytest.raises(aiohttp.ClientError):
            await bots.users_info(user="U0ANA")
        assert server.calls[0] == "chat.postMessage"
        assert server.calls[1:] == ["users.info"] * len(server.calls[1:])
        assert len(server.calls[1:]) > 1  # retried
