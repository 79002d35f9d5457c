"""An alert storm meets Slack's limits: posts are limited per channel (about one a second), chat.update per workspace
(Tier 3, about 50 a minute). Result cards rewritten with delivery statuses must never hold back the alerts' results:
a chat.update 429 holds chat.update's own lane, not the channel's posts, and a rewrite never waits for its lane
(it is shown later), so it never pins the worker the next alert needs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.slack.conversation import UPDATE_BURST, ChannelBusy, ChannelPacer
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import App, event_callback, running_app

POLICY = """
version: 1
defaults: {region: US}
senders:
  ops-sms: {via: sms, originator: OpsAlert}
contacts:
  oncall: ["+14155550100", "+14155550101"]
alerts:
  - name: storm
    slack_channels: [C0ALERTS]
    match: "(?i)firing"
    from: bots
    sender: ops-sms
    to: ["group:oncall"]
    dedupe_window: 10m
"""


def ratelimited(method: str, retry_after: str = "30") -> SlackApiError:
    response = AsyncSlackResponse(
        client=None,
        http_verb="POST",
        api_url=f"https://slack.com/api/{method}",
        req_args={},
        data={"ok": False, "error": "ratelimited"},
        headers={"Retry-After": retry_after},
        status_code=429,
    )
    return SlackApiError("ratelimited", response)


def answering(went: list[tuple[str, float]], method: str) -> Callable[[], Awaitable[str]]:
    async def call() -> str:
        went.append((method, time.monotonic()))
        return method

    return call


async def test_a_chat_update_429_holds_the_updates_lane_and_never_the_channels_posts() -> None:
    pacer = ChannelPacer()
    went: list[tuple[str, float]] = []

    async def refused() -> None:
        raise ratelimited("chat.update")

    with pytest.raises(ChannelBusy, match=r"chat\.update calls to C0ALERTS"):
        await pacer.run("C0ALERTS", refused, method="chat.update", within=0.0)
    started = time.monotonic()
    await pacer.run("C0ALERTS", answering(went, "chat.postMessage"))

    assert went == [("chat.postMessage", pytest.approx(started, abs=0.1))]  # not 30 s later
    with pytest.raises(ChannelBusy):  # the updates' lane is held for its Retry-After, in every channel
        await pacer.run("C0OTHER", answering(went, "chat.update"), method="chat.update", within=0.0)
    assert len(went) == 1


async def test_rewrites_share_one_lane_for_the_workspace_at_the_tiers_pace_and_do_not_wait_for_it() -> None:
    """chat.update's tier is per workspace: a burst of rewrites across channels uses one lane's burst, then the
    next one is told at once that it must wait (``within=0``) instead of holding its worker; posts go meanwhile."""
    pacer = ChannelPacer()
    went: list[tuple[str, float]] = []
    for i in range(UPDATE_BURST):
        await pacer.run(f"C0{i:02d}", answering(went, "chat.update"), method="chat.update", within=0.0)

    started = time.monotonic()
    with pytest.raises(ChannelBusy) as busy:
        await pacer.run("C0ALERTS", answering(went, "chat.update"), method="chat.update", within=0.0)
    assert time.monotonic() - started < 0.1
    assert 0 < busy.value.after <= 1.5  # the lane's next token, at 50 a minute
    await pacer.run("C0ALERTS", answering(went, "chat.postMessage"))
    assert [m for m, _ in went].count("chat.update") == UPDATE_BURST
    assert went[-1][0] == "chat.postMessage"


async def test_an_unpaced_pacer_does_not_pace_rewrites_either() -> None:
    pacer = ChannelPacer(0.0)
    went: list[tuple[str, float]] = []
    await asyncio.gather(
        *(pacer.run("C0ALERTS", answering(went, "chat.update"), method="chat.update", within=0.0) for _ in range(50))
    )
    assert len(went) == 50


# ---------------------------------------------------------------- the whole app


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    slack.add_channel("C0ALERTS", name="alerts")
    async with running_app(slack, fake_d7, tmp_path, policy=POLICY) as running:
        yield running


def firing(i: int) -> dict[str, Any]:
    return {
        "type": "message",
        "subtype": "bot_message",
        "bot_id": "B0GRAFANA",
        "username": "Grafana",
        "text": f"[FIRING:1] Check {'abcdefghij'[i]}{'klmnopqrst'[i]} failed",
        "ts": f"1763900000.{i:06d}",
    }


async def test_result_cards_meeting_chat_updates_tier_do_not_hold_back_the_next_alerts_results(
    app: App, slack: FakeSlack
) -> None:
    """Six alerts texted, then "delivered" for one phone of each: six card rewrites against chat.update at 5 a minute (the
    tier scaled down): the sixth is answered 429 with a 12-s Retry-After. The next alerts in the same channel are
    told at once all the same (before: the channel was held for the Retry-After and its posts went one at a time),
    and no rewrite waits for its turn in a worker."""
    slack.rate_tiers(scale=0.1)  # chat.update: 5 at once, then one every 12 s
    for i in range(6):
        await app.event(event_callback(firing(i)))
    await app.settle()
    secret = await app.relay.storage.settings.get("d7_report_secret")
    for record in await app.relay.storage.sends.audit():  # one report each: one rewrite each
        report = {"request_id": record.request_id, "msg_id": record.id, "recipient": "+14155550100",
                  "status": "delivered"}  # fmt: skip
        assert (await app.http.post(f"{app.url}/d7/reports/{secret}", data=report)).status_code == 200
    started = time.monotonic()
    await app.settle(5)
    assert time.monotonic() - started < 3  # no rewrite waited for its lane
    assert [c.status for c in slack.attempts("chat.update")].count(429) >= 1

    sent = time.monotonic()
    for i in range(6, 9):
        await app.event(event_callback(firing(i)))
    await app.settle(5)

    results = [c for c in slack.attempts("chat.postMessage") if c.ok and c.params.get("thread_ts")]
    assert {c.params["thread_ts"] for c in results} == {f"1763900000.{i:06d}" for i in range(9)}
    assert time.monotonic() - sent < 3  # not held for chat.update's 12-s Retry-After
    assert slack.rate_limited("chat.postMessage") == []
