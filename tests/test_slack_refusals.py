"""Slack refusing a post for a reason that will not change: the bot falls back (the text alone, the sender's DM)
or gives up at once with an error in the log, instead of trying again for 24 hours."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import App, event_callback, running_app

ALERTS = """
version: 1
defaults: {region: US, max_segments: 3, show_numbers: masked}
senders:
  ops-sms: {via: sms, originator: OpsAlert}
rules:
  - name: ops may page on-call
    slack_channels: [C0OPS]
    users: ["*"]
    senders: [ops-sms]
    recipients: ["+1*"]
alerts:
  - name: db
    slack_channels: [C0ALERTS]
    match: "(?i)critical"
    from: any
    sender: ops-sms
    to: ["+14155550199"]
"""


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    slack.add_channel("C0ALERTS")
    async with running_app(slack, fake_d7, tmp_path, policy=ALERTS) as running:
        yield running


async def test_an_alert_thread_closed_for_good_is_given_up_at_once(
    app: App, slack: FakeSlack, fake_d7: FakeD7, caplog: pytest.LogCaptureFixture
) -> None:
    slack.fail("chat.postMessage", error="is_archived")
    alert = {"type": "message", "user": "U0ANYONE", "text": "CRITICAL: disk full", "ts": "1763800100.000100"}
    with caplog.at_level(logging.ERROR, logger="bot.sending"):
        await app.event(event_callback(alert, channel="C0ALERTS"))
        await app.settle()

    assert len(fake_d7.sends) == 1
    assert len(slack.attempts("chat.postMessage")) == 1  # not tried again every 30 seconds for a day
    (record,) = await app.relay.storage.sends.audit()
    assert record.posted_at is not None
    assert "and never will: cannot reply in C0ALERTS (is_archived)" in caplog.text


async def test_a_message_whose_blocks_slack_refuses_is_posted_as_its_text_alone(
    app: App, slack: FakeSlack, fake_d7: FakeD7, caplog: pytest.LogCaptureFixture
) -> None:
    slack.fail("chat.postMessage", error="invalid_blocks", times=1)
    with caplog.at_level(logging.ERROR, logger="bot.slack"):
        await app.command("/sms", "+14155550100 disk full")
        await app.settle()

    refused, announcement, result = slack.attempts("chat.postMessage")
    assert not refused.ok
    assert announcement.ok
    assert announcement.params["text"] == refused.params["text"]
    assert announcement.params["blocks"] == [
        {"type": "section", "text": {"type": "mrkdwn", "text": refused.params["text"]}}
    ]
    assert "Accepted by D7" in result.params["text"]
    assert "Slack refused a message in C0OPS (invalid_blocks" in caplog.text


async def test_a_refusal_in_a_private_channel_without_a_response_url_goes_to_the_dm(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    slack.add_channel("C0SECRET", member=False, public=False)
    # A command Slack sent without a response_url (as some surfaces do): the refusal still reaches the sender.
    await app.command("/sms", "+14155550100 disk full", channel="C0SECRET", response_url="")
    await app.settle()

    assert fake_d7.sends == {}
    (dm,) = slack.dms("U0ALICE")
    assert dm["blocks"][0]["elements"][0]["text"].startswith(":speech_balloon: About a text you sent from <#C0SECRET>")
    assert dm["blocks"][2]["text"]["text"] == "• <#C0SECRET> is not allowed to send via SMS"


async def test_an_error_an_admin_can_fix_is_not_taken_as_final(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    # A scope missing or a token revoked can be fixed: the alert's thread is told once it is (here: the next try).
    slack.fail("chat.postMessage", error="missing_scope", times=1)
    alert = {"type": "message", "user": "U0ANYONE", "text": "CRITICAL: disk full", "ts": "1763800100.000100"}
    await app.event(event_callback(alert, channel="C0ALERTS"))
    await slack.wait_for("chat.postMessage", 1, seconds=20)  # tried again after TELL_RETRY's wait (4-8 s)

    refused, told = slack.attempts("chat.postMessage")
    assert refused.answer == {
        "ok": False,
        "error": "missing_scope",
        "needed": "chat:write",
        "provided": refused.answer["provided"],  # type: ignore[index]
    }
    assert told.ok
    assert told.params["thread_ts"] == "1763800100.000100"
    assert "Alert texted" in told.params["text"]
