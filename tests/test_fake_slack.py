"""The fake Slack misbehaves as Slack does, on demand: error answers, refused connections, per-channel rates, delays.

These drive the fake directly with slack_sdk's client (retries off unless a test is about them), so the bot's own
tests can trust what the fake does when they switch a failure on.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncServerErrorRetryHandler
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from tests.fakes.slack import ANY_METHOD, BOT_TOKEN, FakeSlack

Results = list[AsyncSlackResponse | BaseException]


@pytest.fixture
def client(slack: FakeSlack) -> AsyncWebClient:
    """A client without retries and without a shared session: each call opens its own connection."""
    return AsyncWebClient(token=BOT_TOKEN, base_url=slack.api_url, retry_handlers=[], timeout=5)


@pytest.fixture
async def pooled(slack: FakeSlack) -> AsyncIterator[AsyncWebClient]:
    """A client keeping its connection alive between calls, as the bot's does."""
    async with aiohttp.ClientSession() as session:
        yield AsyncWebClient(token=BOT_TOKEN, base_url=slack.api_url, retry_handlers=[], timeout=5, session=session)


async def refused(call: Callable[[], object]) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        await call()  # type: ignore[misc]
    return caught.value


async def post_at_once(client: AsyncWebClient, *channels: str, method: str = "chat.postMessage") -> Results:
    calls = [client.api_call(method, json={"channel": c, "text": f"post {i}"}) for i, c in enumerate(channels)]
    return list(await asyncio.gather(*calls, return_exceptions=True))


def statuses(results: Results) -> list[int]:
    return [r.status_code if isinstance(r, AsyncSlackResponse) else r.response.status_code for r in results]  # type: ignore[attr-defined]


async def eventually(condition: Callable[[], bool], seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true in time")
        await asyncio.sleep(0.01)


def connect(port: int) -> None:
    socket.create_connection(("127.0.0.1", port), timeout=2).close()


# ------------------------------------------------------------------ fail() / recover()


async def test_fail_answers_an_edge_error_page_for_the_next_calls_then_recovers(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.fail("chat.postMessage", 503, times=2)

    for _ in range(2):
        error = await refused(lambda: client.chat_postMessage(channel="C0OPS", text="disk full"))
        assert error.response.status_code == 503
        assert error.response.data == {}  # an HTML page, not Slack's JSON
    posted = await client.chat_postMessage(channel="C0OPS", text="disk full")

    assert posted["ok"] is True
    attempts = slack.attempts("chat.postMessage")
    assert [(c.status, c.fault, c.ok) for c in attempts] == [
        (503, "fail", False),
        (503, "fail", False),
        (200, None, True),
    ]
    assert "<title>503 Service Unavailable</title>" in str(attempts[0].answer)
    assert slack.of("chat.postMessage") == [{"channel": "C0OPS", "text": "disk full"}]  # only the post made


async def test_fail_for_some_seconds(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.fail("auth.test", 500, seconds=0.3)

    assert (await refused(client.auth_test)).response.status_code == 500
    assert (await refused(client.auth_test)).response.status_code == 500
    await asyncio.sleep(0.35)

    assert (await client.auth_test())["ok"] is True
    assert [c.status for c in slack.attempts("auth.test")] == [500, 500, 200]


async def test_fail_every_method_until_recovered(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.add_user("U0ANA", "ana")
    slack.fail(ANY_METHOD, 502)
    slack.fail("users.info", error="fatal_error")  # a method's own failure wins over the outage of all

    assert (await refused(client.auth_test)).response.status_code == 502
    error = await refused(lambda: client.users_info(user="U0ANA"))
    assert (error.response.status_code, error.response.data) == (200, {"ok": False, "error": "fatal_error"})

    slack.recover("users.info")
    assert (await refused(lambda: client.users_info(user="U0ANA"))).response.status_code == 502
    slack.recover()

    assert (await client.auth_test())["ok"] is True
    assert (await client.users_info(user="U0ANA"))["user"]["id"] == "U0ANA"
    assert slack.of("users.info") == [{"user": "U0ANA"}]
    assert len(slack.attempts("users.info")) == 3


async def test_missing_scope_names_the_needed_and_the_provided_scopes(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.state.usergroups["S0ONCALL"] = ["U0ANA"]
    slack.fail("usergroups.users.list", error="missing_scope", times=1)

    error = await refused(lambda: client.usergroups_users_list(usergroup="S0ONCALL"))

    assert error.response.status_code == 200
    assert error.response.data == {
        "ok": False,
        "error": "missing_scope",
        "needed": "usergroups:read",
        "provided": "commands,chat:write,channels:join,users:read,channels:history,groups:history,channels:read,groups:read",
    }
    assert (await client.usergroups_users_list(usergroup="S0ONCALL"))["users"] == ["U0ANA"]


async def test_a_server_error_retry_handler_sees_each_attempt(slack: FakeSlack) -> None:
    retry = AsyncServerErrorRetryHandler(max_retry_count=2, interval_calculator=FixedValueRetryIntervalCalculator(0))
    client = AsyncWebClient(token=BOT_TOKEN, base_url=slack.api_url, retry_handlers=[retry])
    slack.fail("chat.postMessage", 503, times=2)

    assert (await client.chat_postMessage(channel="C0OPS", text="hi"))["ok"] is True
    assert [c.status for c in slack.attempts("chat.postMessage")] == [503, 503, 200]
    assert len(slack.of("chat.postMessage")) == 1


@pytest.mark.parametrize(
    "kwargs", [{"status": 200}, {"status": 302}, {"times": 0}], ids=["200", "not an error", "zero times"]
)
def test_fail_refuses_what_is_not_a_failure(slack: FakeSlack, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"fail\(\)|times"):
        slack.fail("auth.test", **kwargs)


async def test_rate_limit_keeps_counting_its_429s_in_of(slack: FakeSlack, client: AsyncWebClient) -> None:
    """rate_limit() predates fail(); existing tests count its 429s in of(), so they stay there."""
    slack.rate_limit("chat.postMessage", times=1, retry_after=3)

    error = await refused(lambda: client.chat_postMessage(channel="C0OPS", text="hi"))

    assert (error.response.status_code, error.response.headers["Retry-After"]) == (429, "3")
    assert slack.of("chat.postMessage") == [{"channel": "C0OPS", "text": "hi"}]
    assert [c.fault for c in slack.rate_limited("chat.postMessage")] == ["rate_limit"]


# ------------------------------------------------------------------ refuse_connections() / accept_connections()


async def test_refused_connections_then_accepted_again_on_the_same_port(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    port, url = slack.port, slack.api_url
    await client.auth_test()

    slack.refuse_connections()
    assert slack.refusing
    with pytest.raises(ConnectionRefusedError):
        connect(port)
    with pytest.raises(aiohttp.ClientConnectorError):
        await client.auth_test()

    slack.accept_connections()
    assert (slack.port, slack.api_url, slack.refusing) == (port, url, False)
    assert (await client.auth_test())["ok"] is True
    assert [c.status for c in slack.attempts("auth.test")] == [200, 200]  # the refused call never arrived


async def test_refusing_closes_connections_kept_alive(slack: FakeSlack, pooled: AsyncWebClient) -> None:
    await pooled.auth_test()

    slack.refuse_connections()
    with pytest.raises(aiohttp.ClientConnectionError):  # the pooled connection was closed, a new one refused
        await pooled.auth_test()
    slack.accept_connections()

    assert (await pooled.auth_test())["ok"] is True


def test_refusing_ends_an_idle_keep_alive_connection_at_once(slack: FakeSlack) -> None:
    with socket.create_connection(("127.0.0.1", slack.port), timeout=2) as kept:
        kept.sendall(b"GET /_replies HTTP/1.1\r\nHost: slack\r\n\r\n")
        assert kept.recv(4096).startswith(b"HTTP/1.1 200 OK")

        slack.refuse_connections()

        with contextlib.suppress(ConnectionResetError):  # closed, or reset: either way gone
            assert kept.recv(4096) == b""


def test_refusing_for_some_seconds(slack: FakeSlack) -> None:
    port = slack.port
    slack.refuse_connections(seconds=0.3)
    refused_at = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        connect(port)

    while True:
        try:
            connect(port)
            break
        except ConnectionRefusedError:
            assert time.monotonic() - refused_at < 3, "still refusing"
            time.sleep(0.02)

    assert time.monotonic() - refused_at >= 0.25
    assert (slack.port, slack.refusing) == (port, False)


def test_accepting_again_before_the_time_is_up(slack: FakeSlack) -> None:
    slack.refuse_connections(seconds=30)
    slack.accept_connections()
    connect(slack.port)
    slack.accept_connections()  # already listening: nothing to do
    connect(slack.port)


def test_stopping_while_refusing_frees_the_port_at_once() -> None:
    fake = FakeSlack().start()
    port = fake.port
    fake.refuse_connections(seconds=30)

    started = time.monotonic()
    fake.stop()

    assert time.monotonic() - started < 1
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))


def test_refusing_needs_a_started_fake() -> None:
    with pytest.raises(RuntimeError, match="start"):
        FakeSlack().refuse_connections()


# ------------------------------------------------------------------ strict_rates()


async def test_rates_are_not_limited_by_default(slack: FakeSlack, client: AsyncWebClient) -> None:
    assert statuses(await post_at_once(client, *["C0OPS"] * 5)) == [200] * 5
    assert len(slack.of("chat.postMessage")) == 5


async def test_five_posts_at_once_to_one_channel_are_mostly_refused(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.strict_rates()

    results = await post_at_once(client, *["C0OPS"] * 5)

    ok = [r for r in results if isinstance(r, AsyncSlackResponse)]
    limited = [r for r in results if isinstance(r, SlackApiError)]
    assert 1 <= len(ok) <= 2
    assert len(ok) + len(limited) == 5
    for error in limited:
        assert error.response.status_code == 429
        assert error.response.headers["Retry-After"] == "1"
        assert error.response.data == {"ok": False, "error": "ratelimited"}
    assert len({r["ts"] for r in ok}) == len(ok)
    assert len(slack.of("chat.postMessage")) == len(ok)  # the refused posts were not made
    assert [c.fault for c in slack.rate_limited("chat.postMessage")] == ["strict_rate"] * len(limited)


async def test_posts_to_two_channels_are_limited_separately(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.add_channel("C0B")
    slack.strict_rates(burst=1)

    assert statuses(await post_at_once(client, "C0OPS", "C0B")) == [200, 200]
    assert statuses(await post_at_once(client, "C0OPS", "C0B")) == [429, 429]
    assert [p["channel"] for p in slack.of("chat.postMessage")] == ["C0OPS", "C0B"]
    assert len(slack.rate_limited("chat.postMessage")) == 2


async def test_ephemeral_posts_and_updates_have_their_own_limit(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.strict_rates(burst=1)

    assert statuses(await post_at_once(client, "C0OPS", method="chat.postMessage")) == [200]
    ephemeral = {"channel": "C0OPS", "user": "U0ANA", "text": "only you"}
    assert (await client.api_call("chat.postEphemeral", json=ephemeral)).status_code == 200
    assert (await client.chat_update(channel="C0OPS", ts="1.1", text="v2")).status_code == 200

    error = await refused(lambda: client.chat_update(channel="C0OPS", ts="1.1", text="v3"))
    assert error.response.status_code == 429
    assert (await client.auth_test())["ok"] is True  # methods outside the list are not limited
    assert [p["text"] for p in slack.of("chat.update")] == ["v2"]


async def test_strict_rates_refill_with_time_and_turn_off(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.strict_rates(per_channel_per_second=10, burst=1)

    assert statuses(await post_at_once(client, "C0OPS")) == [200]
    assert statuses(await post_at_once(client, "C0OPS")) == [429]
    await asyncio.sleep(0.15)
    assert statuses(await post_at_once(client, "C0OPS")) == [200]

    slack.relax_rates()
    assert statuses(await post_at_once(client, *["C0OPS"] * 3)) == [200] * 3
    assert len(slack.of("chat.postMessage")) == 5


def test_strict_rates_refuse_nonsense(slack: FakeSlack) -> None:
    with pytest.raises(ValueError, match="rate"):
        slack.strict_rates(per_channel_per_second=0)
    with pytest.raises(ValueError, match="burst"):
        slack.strict_rates(burst=0)


# ------------------------------------------------------------------ state.delays


async def test_a_delay_longer_than_the_client_timeout_times_the_client_out(slack: FakeSlack) -> None:
    impatient = AsyncWebClient(token=BOT_TOKEN, base_url=slack.api_url, retry_handlers=[], timeout=0.1)  # type: ignore[arg-type]
    slack.state.delays["chat.postMessage"] = 0.4

    with pytest.raises(TimeoutError):
        await impatient.chat_postMessage(channel="C0OPS", text="slow")

    (call,) = slack.attempts("chat.postMessage")
    assert call.status is None  # Slack has not answered yet, but took the post in
    assert slack.of("chat.postMessage") == [{"channel": "C0OPS", "text": "slow"}]
    await eventually(lambda: call.status is not None)
    (answered,) = slack.attempts("chat.postMessage")
    assert (answered.status, answered.ok, answered.abandoned) == (200, True, True)  # answered to no one

    slack.state.delays.clear()
    assert (await impatient.auth_test())["ok"] is True


async def test_stop_cancels_handlers_waiting_out_a_delay() -> None:
    fake = FakeSlack().start()
    fake.add_channel("C0OPS")
    fake.state.delays["chat.postMessage"] = 30
    loop = fake._loop
    assert loop is not None
    patient = AsyncWebClient(token=BOT_TOKEN, base_url=fake.api_url, retry_handlers=[], timeout=60)
    impatient = AsyncWebClient(token=BOT_TOKEN, base_url=fake.api_url, retry_handlers=[], timeout=0.1)  # type: ignore[arg-type]
    with pytest.raises(TimeoutError):
        await impatient.chat_postMessage(channel="C0OPS", text="gave up")
    waiting = asyncio.create_task(patient.chat_postMessage(channel="C0OPS", text="still waiting"))
    await eventually(lambda: len(fake.attempts("chat.postMessage")) == 2)

    started = time.monotonic()
    fake.stop()

    assert time.monotonic() - started < 1  # not the delay, nor aiohttp's grace period for handlers
    assert asyncio.all_tasks(loop) == set()
    with pytest.raises(aiohttp.ClientConnectionError):
        await waiting
    assert [c.status for c in fake.attempts("chat.postMessage")] == [None, None]  # never answered
