"""Sends to hundreds of phones, end to end against the strict fake Slack: the announcement, the result card, the
"not delivered" replies and an alert's thread reply are all accepted (Slack refuses a section over 3,000
characters), the lists are summarised, and every failure is told even when the card cannot be rewritten."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import App, event_callback, everyone_policy, running_app

SECRET = "report-path-secret-0123456789abcdef"
REPORTS = f"/d7/reports/{SECRET}"
NUMBERS = [f"+1415555{i:04d}" for i in range(200)]


STORM = """alerts:
  - name: storm to everyone
    slack_channels: [C0ALERTS]
    match: "(?i)critical"
    from: any
    sender: ops-sms
    to: ["group:everyone"]
"""


def policy_for(numbers: list[str]) -> str:
    return everyone_policy(numbers, alerts=STORM)


BIG_POLICY = policy_for(NUMBERS)


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    slack.add_channel("C0ALERTS")
    async with running_app(
        slack,
        fake_d7,
        tmp_path,
        policy=BIG_POLICY,
        PUBLIC_URL="https://relay.example.com",
        D7_REPORT_SECRET=SECRET,
    ) as running:
        yield running


async def undelivered(app: App, request_id: str, numbers: list[str]) -> None:
    """D7's reports, one per number, as D7 posts them (form data), then wait for the bot to tell them."""
    for number in numbers:
        fields = {"request_id": request_id, "msg_id": f"m-{number}", "recipient": number, "status": "undelivered"}
        body = urlencode(fields | {"reason": "absent subscriber"})
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        assert (await app.http.post(app.url + REPORTS, content=body, headers=headers)).status_code == 200
    await app.settle()


async def test_a_send_to_200_numbers_is_announced_and_every_failure_told(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await app.command("/sms", "group:everyone Disk full on db-1")
    await app.settle()
    # D7 takes them in requests of 100 (``MAX_RECIPIENTS_PER_REQUEST``), in order.
    assert [len(s.recipients) for s in fake_d7.sends.values()] == [100, 100]
    request_id = next(iter(fake_d7.sends))

    announcement, result = slack.of("chat.postMessage")[:2]
    head = announcement["blocks"][0]["text"]["text"]
    assert head.startswith(":outbox_tray: <@U0ALICE> is sending an SMS as *OpsAlert* (`ops-sms`) to +1 415-555-0000")
    assert head.endswith(" more")
    assert "Accepted by D7" in result["text"]

    await undelivered(app, request_id, NUMBERS[:50])

    # The card counts by status and lists those not reached as far as they fit; Slack took every update.
    assert slack.refused == []
    card = slack.of("chat.update")[-1]["blocks"][-1]["text"]["text"]
    assert card.startswith("*Delivery* · 50 undelivered · 150 no report yet\n*Not reached:*\n+1 415-555-0000")
    assert card.endswith("more not reached")
    # Every failure is in a "not delivered" reply in the send's thread (as many replies as reports were told in).
    replies = [p["text"] for p in slack.of("chat.postMessage") if p.get("thread_ts") and "not delivered" in p["text"]]
    counted = 0
    for reply in replies:
        listed = reply.count("+1 415-555-")
        more = reply.rsplit(" and ", 1)[-1]
        counted += listed + (int(more.split()[0]) if more.endswith(" more.") else 0)
    assert counted == 50


async def test_every_failure_is_told_although_slack_refuses_to_rewrite_the_card(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await app.command("/sms", "group:everyone Disk full on db-1")
    await app.settle()
    request_id = next(iter(fake_d7.sends))
    slack.fail("chat.update", error="cant_update_message")  # for good

    await undelivered(app, request_id, NUMBERS[:3])

    replies = [p["text"] for p in slack.of("chat.postMessage") if "not delivered" in str(p.get("text"))]
    assert sum(r.count("+1 415-555-") for r in replies) == 3
    # Refused for a reason that will not change: tried once per new report, not every minute.
    assert 1 <= len(slack.attempts("chat.update")) <= 3  # one per batch of reports the outbox picked up
    (record,) = await app.relay.storage.sends.audit()
    assert record.card_due_at is None


async def test_an_alert_to_200_numbers_gets_its_thread_reply(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    alert = {"type": "message", "user": "U0ANYONE", "text": "CRITICAL: disk full on db-1", "ts": "1763800100.000100"}
    assert (await app.event(event_callback(alert, channel="C0ALERTS"))).status_code == 200
    await app.settle()

    assert [len(s.recipients) for s in fake_d7.sends.values()] == [100, 100]
    for body in fake_d7.bodies("/messages/v1/send"):  # each phone its own message object, with its own link
        assert [len(m["recipients"]) for m in body["messages"]] == [1] * 100
        assert len({m["content"] for m in body["messages"]}) == 100
    (reply,) = [p for p in slack.of("chat.postMessage") if p.get("thread_ts") == "1763800100.000100"]
    assert reply["text"].startswith(":white_check_mark: *Alert texted* to +1 415-555-0000, +1 415-555-0001")
    assert slack.refused == []


async def test_a_card_slack_cannot_take_for_now_is_tried_again_later_and_the_failures_are_told_at_once(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await app.command("/sms", "group:everyone Disk full on db-1")
    await app.settle()
    request_id = next(iter(fake_d7.sends))
    slack.fail("chat.update", 503)  # Slack's edge is down for chat.update

    before = datetime.now(UTC)
    await undelivered(app, request_id, NUMBERS[:1])

    (reply,) = [p["text"] for p in slack.of("chat.postMessage") if "not delivered" in str(p.get("text"))]
    assert "+1 415-555-0000" in reply
    (tried,) = slack.attempts("chat.update")
    assert tried.status == 503
    (record,) = await app.relay.storage.sends.audit()
    # Tried again after a minute (CARD_RETRY's first wait), not given up and not hammered.
    assert record.card_due_at is not None
    assert timedelta(seconds=55) <= record.card_due_at - before <= timedelta(seconds=70)


@pytest.mark.parametrize("n", [1, 50, 200, 1000])
async def test_announcement_card_alert_reply_and_refusal_are_taken_by_slack_for_n_recipients_or_problems(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path, n: int
) -> None:
    numbers = [f"+1415555{i:04d}" for i in range(n)]
    slack.add_channel("C0ALERTS")
    async with running_app(
        slack, fake_d7, tmp_path, policy=policy_for(numbers), PUBLIC_URL="https://x.example", D7_REPORT_SECRET=SECRET
    ) as app:
        await app.command("/sms", "group:everyone Disk full on db-1")
        await app.settle()
        assert sum(len(s.recipients) for s in fake_d7.sends.values()) == n
        assert max(len(s.recipients) for s in fake_d7.sends.values()) <= 100
        request_id = next(iter(fake_d7.sends))
        await undelivered(app, request_id, numbers[:50])

        alert = {"type": "message", "user": "U0ANYONE", "text": "CRITICAL: disk", "ts": "1763800100.000100"}
        await app.event(event_callback(alert, channel="C0ALERTS"))
        await app.settle()

        bad = " ".join(f"+1555{i:04d}" for i in range(n))  # too short to be phone numbers: n problems
        await app.command("/sms", f"{bad} hi")
        await app.settle()

    assert slack.refused == []  # Slack took every post, update and response
    posts = slack.of("chat.postMessage")
    assert posts[0]["blocks"][0]["text"]["text"].startswith(":outbox_tray:")
    assert sum("Accepted by D7" in str(p["text"]) for p in posts) == 1
    assert sum("Alert texted" in str(p["text"]) for p in posts) == 1
    assert slack.of("chat.update")  # the card shows the reports
    assert sum(str(p["text"]).count("not delivered") for p in posts) >= 1
    (refusal,) = [r for r in slack.responses["cmd"] if "is not a valid phone number" in str(r["text"])]
    assert refusal["blocks"][1]["text"]["text"].startswith("• '+15550000' is not a valid phone number")
