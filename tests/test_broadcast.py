"""Broadcasts: one ``/sms`` to a 1,000-number contact group, end to end against the fakes, asserted on the wire.

D7 gets the send in requests of at most ``MAX_RECIPIENTS_PER_REQUEST`` recipients, in order (the fake refuses any
larger one here); every request id is kept, so reports naming any of them reach the send; Slack takes the
announcement and the result card (counts, not a line per phone); a thousand reports rewrite the card a bounded
number of times, the last one showing them all. A request after the first that fails ends the send there: nothing is
tried twice, and the phones it did not reach are told "not sent" (or "may have gone", when D7's answer was lost).
On SQLite, and on PostgreSQL when ``TEST_DATABASE_URL`` is set.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot.d7.wire import MAX_RECIPIENTS_PER_REQUEST, build_sms_body
from bot.domain.models import OutgoingText, SendResult, SendStatus, Via
from bot.domain.sends import CARD_EVERY, Outcome, Part, PartState
from bot.storage.journal import FileJournal
from bot.storage.schema import recipient_statuses, send_requests, sends
from tests import blockkit
from tests.fakes.d7 import FakeD7, Reply
from tests.fakes.slack import FakeSlack
from tests.harness import App, everyone_policy, reset_postgres, running_app
from tests.test_journal import sending

SECRET = "broadcast-report-secret-0123456789"
SEND = "/messages/v1/send"
NUMBERS = [f"+1415555{i:04d}" for i in range(1000)]
POLICY = everyone_policy(NUMBERS)
PG_URL = os.environ.get("TEST_DATABASE_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
async def app(request: pytest.FixtureRequest, slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    extra: dict[str, Any] = {}
    if request.param == "postgresql":
        if not PG_URL:
            pytest.skip("TEST_DATABASE_URL is not set")
        await reset_postgres(PG_URL)
        extra["DATABASE_URL"] = PG_URL
    fake_d7.max_recipients = MAX_RECIPIENTS_PER_REQUEST  # any larger request is refused (422) on the wire
    async with running_app(
        slack,
        fake_d7,
        tmp_path,
        policy=POLICY,
        PUBLIC_URL="https://relay.example.com",
        D7_REPORT_SECRET=SECRET,
        **extra,
    ) as running:
        fake_d7.report_to = running.url
        yield running


def recipients_of(body: dict[str, Any]) -> list[str]:
    return [r for m in body["messages"] for r in m["recipients"]]


async def rows(app: App, query: sa.Select[Any]) -> list[Any]:
    async with app.relay.storage.database.connect() as conn:
        return list((await conn.execute(query)).all())


def card_updates(slack: FakeSlack, ts: str) -> list[dict[str, Any]]:
    return [u for u in slack.of("chat.update") if u.get("ts") == ts]


async def broadcast(app: App, slack: FakeSlack) -> dict[str, Any]:
    """One /sms to the 1,000-number group; its result card as posted (``ts``: the message's, as Slack answered)."""
    await app.command("/sms", "group:everyone Water main break: the office is closed today.")
    await app.settle(30)
    (card,) = [p for p in slack.of("chat.postMessage") if p.get("thread_ts") and "D7" in str(p.get("text"))]
    ((ts,),) = await rows(app, sa.select(sends.c.result_ts))
    return card | {"ts": ts}


async def test_a_send_to_1000_numbers_goes_to_d7_in_requests_of_100_in_order_each_request_id_kept(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    card = await broadcast(app, slack)

    bodies = fake_d7.bodies(SEND)
    assert [len(recipients_of(b)) for b in bodies] == [MAX_RECIPIENTS_PER_REQUEST] * 10
    assert [r for b in bodies for r in recipients_of(b)] == NUMBERS  # each phone once, in the group's order
    for body in bodies:  # the same text and options in every request
        assert body["messages"] == [
            {
                "channel": "sms",
                "recipients": recipients_of(body),
                "content": "Water main break: the office is closed today.",
                "msg_type": "text",
                "data_coding": "text",
            }
        ]
        assert body["message_globals"] == {
            "originator": "OpsAlert",
            "report_url": f"https://relay.example.com/d7/reports/{SECRET}",
        }
    ids = list(fake_d7.sends)
    assert len(ids) == 10  # each request accepted (the fake keeps only those)
    ((first, parts),) = await rows(app, sa.select(sends.c.request_id, sends.c.parts))
    assert first == ids[0]
    assert [p["request_id"] for p in parts] == ids
    assert [(p["first"], p["count"], p["state"]) for p in parts] == [(100 * k, 100, "accepted") for k in range(10)]
    assert sorted(r.request_id for r in await rows(app, sa.select(send_requests.c.request_id))) == sorted(ids[1:])
    head = card["blocks"][0]["text"]["text"]
    assert head.startswith(f":white_check_mark: *Accepted by D7* · 10 requests · request_ids `{ids[0]}`, `{ids[1]}`")


async def test_the_announcement_and_the_card_of_a_1000_number_send_are_within_slacks_limits(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    card = await broadcast(app, slack)
    await fake_d7.emit_reports("sent")
    await app.settle(30)

    announcement = slack.of("chat.postMessage")[0]
    assert slack.refused == []
    for message in [announcement, card, *card_updates(slack, card["ts"])]:
        assert blockkit.problems(message["blocks"]) == []
        assert len(message["blocks"]) <= blockkit.MESSAGE_BLOCKS
        assert len(message["text"]) <= 3000
    head = announcement["blocks"][0]["text"]["text"]
    assert head.startswith(":outbox_tray: <@U0ALICE> is sending an SMS as *OpsAlert* (`ops-sms`) to +1 415-555-0000")
    assert head.endswith(" more")
    assert len(head) < 2000
    last = card_updates(slack, card["ts"])[-1]["blocks"][-1]["text"]["text"]
    assert last == "*Delivery* · 1000 sent, not yet delivered"  # counts, not a thousand lines


async def test_a_thousand_reports_rewrite_the_card_a_bounded_number_of_times_and_the_last_shows_them_all(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    card = await broadcast(app, slack)
    assert card_updates(slack, card["ts"]) == []

    started = time.monotonic()
    assert await fake_d7.emit_reports("delivered") == 1000  # every report answered 200, to all ten request ids
    await app.settle(30)
    elapsed = time.monotonic() - started

    delivered = await rows(
        app, sa.select(recipient_statuses.c.recipient).where(recipient_statuses.c.status == "delivered")
    )
    assert sorted(r.recipient for r in delivered) == NUMBERS
    updates = card_updates(slack, card["ts"])
    # The first report shows at once; then at most one rewrite per CARD_EVERY while they keep coming; and the last.
    assert 1 <= len(updates) <= 2 + math.ceil(elapsed / CARD_EVERY.total_seconds())
    assert len(updates) <= 8  # not one per report, nor one per batch of reports applied
    assert updates[-1]["blocks"][-1]["text"]["text"] == "*Delivery* · 1000 delivered"
    assert slack.rate_limited("chat.update") == []
    # Nobody was told "not delivered", and the card said so in place: no reply per report.
    assert [p for p in slack.of("chat.postMessage") if "not delivered" in str(p.get("text"))] == []


async def test_a_later_request_that_fails_ends_the_send_there_and_its_phones_are_told_not_sent(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    invalid = {"detail": [{"loc": ["body", "messages", 0, "recipients"], "msg": "invalid", "type": "value_error"}]}
    fake_d7.enqueue(Reply(), Reply(), Reply(), Reply(422, body=invalid))  # the first three as usual, then a 422
    card = await broadcast(app, slack)

    assert len(fake_d7.bodies(SEND)) == 4  # never the rest, and never the first three again
    assert "Accepted by D7" in card["text"]
    (note,) = [b["text"]["text"] for b in card["blocks"] if "Not all sent" in str(b)]
    assert note.startswith(":x: *Not all sent:* request 4 of 10 failed (")
    assert note.endswith(
        "its 100 recipients got nothing. The 600 recipients after it were not sent. 300 recipients were accepted."
    )
    failed = await rows(app, sa.select(recipient_statuses).where(recipient_statuses.c.status == "failed"))
    assert sorted(r.recipient for r in failed) == NUMBERS[300:]
    assert {r.reason.split(":")[0] for r in failed} == {"not sent"}
    # The thread says so in a reply of its own, and the card counts them.
    replies = [p["text"] for p in slack.of("chat.postMessage") if "was not delivered to" in str(p.get("text"))]
    assert len(replies) == 1
    assert replies[0].startswith(
        ":rotating_light: <@U0ALICE> your SMS was not delivered to +1 415-555-0300: :x: failed (not sent: "
    )
    counts = card_updates(slack, card["ts"])[-1]["blocks"][-1]["text"]["text"]
    assert counts.startswith("*Delivery* · 300 no report yet · 700 failed\n*Not reached:*\n+1 415-555-0300")


async def test_a_lost_answer_to_a_later_request_leaves_its_phones_unknown_and_the_rest_not_sent(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    fake_d7.enqueue(Reply(), Reply(action="close"))  # the second request's answer never comes
    card = await broadcast(app, slack)

    assert len(fake_d7.bodies(SEND)) == 2
    (note,) = [b["text"]["text"] for b in card["blocks"] if "Not all sent" in str(b)]
    assert note.startswith(":warning: *Not all sent:* D7 did not answer request 2 of 10, so its 100 recipients may")
    failed = await rows(app, sa.select(recipient_statuses.c.recipient).where(recipient_statuses.c.status == "failed"))
    assert sorted(r.recipient for r in failed) == NUMBERS[200:]  # request 2's phones may have it: not "failed"
    ((state,),) = await rows(app, sa.select(sends.c.state))
    assert state == "accepted"


async def test_a_stale_broadcast_is_looked_up_request_by_request_and_status_takes_any_of_its_request_ids(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    async with running_app(
        slack, fake_d7, tmp_path, policy=POLICY, PUBLIC_URL="https://relay.example.com", D7_REPORT_SECRET=SECRET,
        D7_RECONCILE_AFTER="1s",
    ) as app:  # fmt: skip
        card = await broadcast(app, slack)
        ids = list(fake_d7.sends)
        for request_id, send in fake_d7.sends.items():
            for number in send.recipients:
                fake_d7.set_status(request_id, number, "delivered")
        await asyncio.sleep(1.1)

        assert app.relay.deliveries is not None
        assert await app.relay.deliveries.reconcile() == 1
        await app.settle(30)
        looked_up = [r.path for r in fake_d7.requests if r.method == "GET"]
        assert looked_up == [f"/report/v1/message-log/{i}" for i in ids]  # each request, at the bounded rate
        assert card_updates(slack, card["ts"])[-1]["blocks"][-1]["text"]["text"] == "*Delivery* · 1000 delivered"

        await app.command("/sms", f"status {ids[7]}")  # a later request's id finds the send
        await app.settle()
        answer = slack.responses["cmd"][-1]
        assert answer["blocks"][0]["text"]["text"].startswith(f"*SMS* request_id `{ids[7]}` · sent by <@U0ALICE>")
        assert "+1 415-555-0700: :white_check_mark: delivered" in answer["blocks"][1]["text"]["text"]


# ------------------------------------------------------------ the pieces


def test_no_request_body_carries_more_recipients_than_the_limit() -> None:
    text = OutgoingText(Via.SMS, tuple(NUMBERS[:101]), "hello", originator="OpsAlert")
    with pytest.raises(ValueError, match="at most 100 recipients go in one request, got 101"):
        build_sms_body(text)
    parts = text.batches(MAX_RECIPIENTS_PER_REQUEST)
    assert [len(p.recipients) for p in parts] == [100, 1]
    assert [len(recipients_of(build_sms_body(p).wire())) for p in parts] == [100, 1]


def test_batches_keep_each_phones_own_ending_with_its_phone() -> None:
    numbers = tuple(NUMBERS[:5])
    text = OutgoingText(Via.SMS, numbers, "ALERT", suffixes={n: f" https://x/{n[-4:]}" for n in numbers})
    parts = text.batches(2)
    assert [p.recipients for p in parts] == [numbers[:2], numbers[2:4], numbers[4:]]
    assert [dict(p.suffixes) for p in parts][2] == {numbers[4]: " https://x/0004"}
    body = build_sms_body(parts[1]).wire()
    assert [m["content"] for m in body["messages"]] == ["ALERT https://x/0002", "ALERT https://x/0003"]
    assert text.batches(None) == [text] == text.batches(5)


async def test_the_journal_keeps_every_request_of_a_send_in_several(tmp_path: Path) -> None:
    """Noted before each request after the first: a process killed during it leaves the send as it then stood."""
    first = SendResult("r-1", SendStatus.ACCEPTED, datetime(2026, 12, 7, 12, 0, tzinfo=UTC))
    parts = (
        Part(0, 100, PartState.ACCEPTED, "r-1"),
        Part(100, 100, PartState.UNKNOWN, error="the bot stopped while D7 was being called"),
        Part(200, 50, PartState.NOT_SENT),
    )
    journal = FileJournal.open(tmp_path / "journal")
    await journal.keep(sending("send-1"), Outcome(result=first, parts=parts))
    await journal.aclose()

    (kept,) = FileJournal.open(tmp_path / "journal").kept()
    assert kept.outcome == Outcome(result=first, parts=parts)
    assert kept.outcome.request_ids == ("r-1",)
    assert kept.outcome.not_sent(tuple(NUMBERS[:250])) == [(n, parts[2]) for n in NUMBERS[200:250]]
