"""The fake Slack refuses what Slack refuses (Block Kit limits, response_url and trigger windows, rates), and
misbehaves as Slack does on demand: error answers, refused connections, stricter rates, delays.

These drive the fake directly with slack_sdk's client (retries off unless a test is about them), so the bot's own
tests can trust what the fake does when they switch a failure on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncServerErrorRetryHandler
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests import blockkit
from tests.fakes.slack import ANY_METHOD, BOT_TOKEN, FakeSlack
from tests.harness import slash_command, triggers_in

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


async def test_a_channel_takes_a_burst_of_ten_posts_then_one_a_second(slack: FakeSlack, client: AsyncWebClient) -> None:
    assert statuses(await post_at_once(client, *["C0OPS"] * 10)) == [200] * 10

    (error,) = await post_at_once(client, "C0OPS")

    assert isinstance(error, SlackApiError)
    assert (error.response.status_code, error.response.headers["Retry-After"]) == (429, "1")
    assert error.response.data == {"ok": False, "error": "ratelimited"}
    assert len(slack.of("chat.postMessage")) == 10
    assert [c.fault for c in slack.rate_limited("chat.postMessage")] == ["strict_rate"]
    slack.advance(1)
    assert statuses(await post_at_once(client, "C0OPS", "C0OPS")) == [200, 429]  # one more a second


async def test_ephemeral_posts_and_updates_have_no_per_channel_limit_by_default(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    ephemeral = {"channel": "C0OPS", "user": "U0ANA", "text": "only you"}
    calls = [client.api_call("chat.postEphemeral", json=ephemeral) for _ in range(15)]

    assert statuses(list(await asyncio.gather(*calls, return_exceptions=True))) == [200] * 15


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
    assert statuses(await post_at_once(client, *["C0OPS"] * 12)) == [200] * 12  # not even the default limit
    assert len(slack.of("chat.postMessage")) == 14


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


# ------------------------------------------------------------------ Block Kit and message limits


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def modal(title: str = "Send a text", blocks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "modal", "title": {"type": "plain_text", "text": title}, "blocks": blocks or [section("hi")]}


async def test_a_section_over_3000_characters_is_refused_as_slack_refuses_it(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    blocks = [section("fits"), section("x" * 3001)]

    error = await refused(lambda: client.chat_postMessage(channel="C0OPS", text="fallback", blocks=blocks))

    pointer = "must be less than 3001 characters [json-pointer:/blocks/1/text/text]"
    assert (error.response.status_code, error.response.data) == (
        200,
        {
            "ok": False,
            "error": "invalid_blocks",
            "errors": [pointer],
            "response_metadata": {"messages": [f"[ERROR] {pointer}"]},
        },
    )
    assert slack.of("chat.postMessage") == []  # nothing was posted
    assert [c.fault for c in slack.attempts("chat.postMessage")] == ["refused"]
    assert [(r.where, r.error, r.messages) for r in slack.refused] == [
        ("chat.postMessage", "invalid_blocks", [pointer])
    ]
    assert (await client.chat_postMessage(channel="C0OPS", text="ok", blocks=[section("x" * 3000)]))["ok"] is True


@pytest.mark.parametrize("method", ["chat.postEphemeral", "chat.update"])
async def test_every_message_method_checks_blocks(slack: FakeSlack, client: AsyncWebClient, method: str) -> None:
    params = {"channel": "C0OPS", "user": "U0ANA", "ts": "1.1", "text": "x", "blocks": [section("")] * 51}

    error = await refused(lambda: client.api_call(method, json=params))

    assert error.response.data["error"] == "invalid_blocks"
    assert error.response.data["errors"][:2] == [
        "no more than 50 items allowed [json-pointer:/blocks]",
        "must be more than 0 characters [json-pointer:/blocks/0/text/text]",
    ]
    assert slack.of(method) == []


async def test_fifty_blocks_are_a_message_and_fifty_one_are_not(slack: FakeSlack, client: AsyncWebClient) -> None:
    assert (await client.chat_postMessage(channel="C0OPS", text="x", blocks=[section("b")] * 50))["ok"] is True

    error = await refused(lambda: client.chat_postMessage(channel="C0OPS", text="x", blocks=[section("b")] * 51))

    assert error.response.data["errors"] == ["no more than 50 items allowed [json-pointer:/blocks]"]
    assert len(slack.of("chat.postMessage")) == 1


async def test_message_text_and_the_text_of_all_blocks_have_their_own_limits(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    too_long = await refused(lambda: client.chat_postMessage(channel="C0OPS", text="x" * 40_001))
    five_sections = [section("x" * 2500)] * 5  # each fits, 12,500 together does not

    too_much = await refused(lambda: client.chat_postMessage(channel="C0OPS", text="x", blocks=five_sections))

    assert too_long.response.data == {"ok": False, "error": "msg_too_long"}
    assert too_much.response.data == {"ok": False, "error": "msg_blocks_too_long"}
    assert (await client.chat_postMessage(channel="C0OPS", text="x" * 40_000))["ok"] is True


async def test_a_view_title_over_24_characters_is_invalid_arguments(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.issue_trigger("1337.1.a")

    error = await refused(lambda: client.views_open(trigger_id="1337.1.a", view=modal("Send a text message to them")))

    assert error.response.data == {
        "ok": False,
        "error": "invalid_arguments",
        "response_metadata": {
            "messages": [
                "[ERROR] failed to match all allowed schemas [json-pointer:/view]",
                "[ERROR] must be less than 25 characters [json-pointer:/view/title/text]",
            ]
        },
    }
    assert slack.of("views.open") == []
    assert slack.views == {}
    assert (await client.views_open(trigger_id="1337.1.a", view=modal()))["ok"] is True  # not used up by the refusal


async def test_views_update_checks_the_view_and_the_hash(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.issue_trigger("1337.2.a")
    opened = (await client.views_open(trigger_id="1337.2.a", view=modal()))["view"]
    metadata = {**modal(), "private_metadata": "m" * 3001}

    too_big = await refused(lambda: client.views_update(view_id=opened["id"], hash=opened["hash"], view=metadata))
    updated = (await client.views_update(view_id=opened["id"], hash=opened["hash"], view=modal("Sent")))["view"]
    stale = await refused(lambda: client.views_update(view_id=opened["id"], hash=opened["hash"], view=modal()))

    assert (
        "[ERROR] must be less than 3001 characters [json-pointer:/view/private_metadata]"
        in (too_big.response.data["response_metadata"]["messages"])
    )
    assert updated["hash"] == f"{opened['id']}.2"
    assert stale.response.data == {"ok": False, "error": "hash_conflict"}


async def test_views_publish_sets_a_users_home_tab_within_the_limits(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.add_user("U0ANA", "ana")
    home = {"type": "home", "blocks": [section("Your texts")] * 100}

    published = (await client.views_publish(user_id="U0ANA", view=home))["view"]
    error = await refused(lambda: client.views_publish(user_id="U0ANA", view={**home, "blocks": home["blocks"] * 2}))

    assert slack.homes["U0ANA"] == published
    assert (
        "[ERROR] no more than 100 items allowed [json-pointer:/view/blocks]"
        in (error.response.data["response_metadata"]["messages"])
    )


def test_slack_sdks_models_report_what_the_table_does_not_know() -> None:
    video = {"type": "video", "alt_text": "a", "video_url": "https://v", "thumbnail_url": "https://t"}
    video["title"] = {"type": "plain_text", "text": "t" * 201}

    assert blockkit.problems([video]) == [
        "title attribute cannot exceed 200 characters (slack_sdk) [json-pointer:/blocks/0]"
    ]
    with pytest.raises(AssertionError, match="json-pointer:/blocks/0/text/text"):
        blockkit.assert_valid_blocks([section("x" * 3001)])
    blockkit.assert_valid_blocks([section("x" * 3000)])
    blockkit.assert_valid_view(modal())


# ------------------------------------------------------------------ response_url


async def test_a_response_url_takes_five_posts_and_refuses_the_sixth(slack: FakeSlack) -> None:
    url = slack.response_url("cmd")
    answers = [await AsyncWebhookClient(url).send(text=f"notice {i}") for i in range(6)]

    assert [(a.status_code, a.body) for a in answers] == [(200, "ok")] * 5 + [(404, "used_url")]
    assert [r["text"] for r in slack.responses["cmd"]] == [f"notice {i}" for i in range(5)]
    assert slack.posts_to(url) == slack.responses["cmd"]
    assert [(r.where, r.status, r.error) for r in slack.refused] == [("response_url:cmd", 404, "used_url")]


async def test_a_response_url_expires_30_minutes_after_it_was_issued(slack: FakeSlack) -> None:
    url = slack.response_url("cmd")
    assert (await AsyncWebhookClient(url).send(text="at once")).status_code == 200

    slack.advance(31 * 60)
    late = await AsyncWebhookClient(url).send(text="31 minutes later")

    assert (late.status_code, late.body) == (404, "expired_url")
    assert [r["text"] for r in slack.responses["cmd"]] == ["at once"]


async def test_each_response_url_issued_has_its_own_five_posts(slack: FakeSlack) -> None:
    first, second = slack.response_url("cmd"), slack.response_url("cmd")
    for url in (first, second):
        for _ in range(5):
            assert (await AsyncWebhookClient(url).send(text="n")).status_code == 200

    assert slack.response_urls("cmd") == [first, second]
    assert len(slack.responses["cmd"]) == 10


async def test_a_response_url_refuses_invalid_blocks_and_urls_it_never_issued(slack: FakeSlack) -> None:
    url = slack.response_url("cmd")

    invalid = await AsyncWebhookClient(url).send(text="x", blocks=[section("x" * 3001)])
    unknown = await AsyncWebhookClient(f"{slack.url}/response/cmd/999").send(text="x")

    assert (invalid.status_code, invalid.body) == (400, "invalid_blocks")
    assert (unknown.status_code, unknown.body) == (404, "no_service")
    assert "cmd" not in slack.responses
    assert slack.refused[0].messages == ["must be less than 3001 characters [json-pointer:/blocks/0/text/text]"]


# ------------------------------------------------------------------ trigger_id


async def test_a_trigger_opens_one_view_within_three_seconds(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.issue_trigger("1337.3.a")
    slack.issue_trigger("1337.3.b")

    assert (await client.views_open(trigger_id="1337.3.a", view=modal()))["ok"] is True
    again = await refused(lambda: client.views_open(trigger_id="1337.3.a", view=modal()))
    slack.advance(3.1)
    late = await refused(lambda: client.views_open(trigger_id="1337.3.b", view=modal()))
    unknown = await refused(lambda: client.views_open(trigger_id="1337.3.never", view=modal()))

    assert again.response.data == {"ok": False, "error": "exchanged_trigger_id"}
    assert late.response.data == {"ok": False, "error": "expired_trigger_id"}
    assert unknown.response.data == {"ok": False, "error": "invalid_trigger_id"}
    assert len(slack.of("views.open")) == 1
    assert [r.error for r in slack.refused] == ["exchanged_trigger_id", "expired_trigger_id", "invalid_trigger_id"]


def test_the_harness_finds_the_trigger_in_what_slack_posts() -> None:
    command = slash_command("/sms", "hi", trigger_id="1337.4.cmd")
    interaction = urlencode({"payload": json.dumps({"type": "shortcut", "trigger_id": "1337.4.sc"})}).encode()

    assert triggers_in(command) == ["1337.4.cmd"]
    assert triggers_in(interaction) == ["1337.4.sc"]
    assert triggers_in(b'{"type": "event_callback", "event": {"type": "message"}}') == []


# ------------------------------------------------------------------ channels and DMs


async def test_posting_to_a_user_id_posts_in_the_apps_dm(slack: FakeSlack, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="U0ANA", text="your text was not delivered")

    assert (posted["ok"], posted["channel"]) == (True, "D0ANA")
    reply = await client.chat_postMessage(channel="D0ANA", thread_ts=posted["ts"], text="details")
    assert reply["ok"] is True
    assert [p["text"] for p in slack.dms("U0ANA")] == ["your text was not delivered", "details"]
    assert slack.dms("U0BOB") == []


async def test_an_ephemeral_post_to_someone_outside_the_channel_is_refused(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.add_channel("C0SMALL", users=["U0ANA"])

    ok = await client.chat_postEphemeral(channel="C0SMALL", user="U0ANA", text="only you")
    error = await refused(lambda: client.chat_postEphemeral(channel="C0SMALL", user="U0BOB", text="only you"))

    assert ok["ok"] is True
    assert error.response.data == {"ok": False, "error": "user_not_in_channel"}


async def test_private_channels_the_bot_is_not_in_are_not_found(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.add_channel("C0PRIVATE", member=False, public=False)
    slack.add_channel("C0PUBLIC", member=False)

    private = await refused(lambda: client.chat_postMessage(channel="C0PRIVATE", text="x"))
    public = await refused(lambda: client.chat_postMessage(channel="C0PUBLIC", text="x"))

    assert private.response.data == {"ok": False, "error": "channel_not_found"}
    assert public.response.data == {"ok": False, "error": "not_in_channel"}


# ------------------------------------------------------------------ rate tiers and latency


async def test_rate_tiers_are_off_by_default_and_limit_each_method_when_on(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    async def lookups(count: int) -> list[int]:
        calls = [client.usergroups_users_list(usergroup="S0SUPPORT") for _ in range(count)]
        return statuses(list(await asyncio.gather(*calls, return_exceptions=True)))

    assert await lookups(25) == [200] * 25
    slack.rate_tiers()

    assert await lookups(21) == [200] * 20 + [429]  # Tier 2: 20 a minute
    (limited,) = slack.rate_limited("usergroups.users.list")
    assert (limited.fault, limited.answer) == ("tier_rate", {"ok": False, "error": "ratelimited"})
    error = await refused(lambda: client.usergroups_users_list(usergroup="S0SUPPORT"))
    assert error.response.headers["Retry-After"] == "3"  # one more every 3 s
    slack.advance(3)
    assert await lookups(1) == [200]
    slack.rate_tiers(False)
    assert await lookups(5) == [200] * 5


async def test_latency_slows_every_call(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.latency(0.2)
    started = time.monotonic()

    await asyncio.gather(client.auth_test(), client.usergroups_users_list(usergroup="S0SUPPORT"))

    assert 0.2 <= time.monotonic() - started < 1
