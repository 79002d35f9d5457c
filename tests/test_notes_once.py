"""Notes in a send's thread — not delivered, still unknown, acknowledged by a phone, not texted again — carry a key as
message metadata, like its announcement and result (issue 30: "Slack posts with unknown outcomes are never repeated
blindly"). Against the fake Slack Web API on loopback, with Slack carrying a post out and answering after the
client's timeout:

- a note whose answer was lost is looked for before it is posted again, and found;
- a note this process made is not made again when its caller tries again (the database failed after the post);
- another process (a fresh ``SlackConversations``) asked to be careful finds it instead of posting it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.delivery import RecipientDelivery
from bot.domain.models import Origin, RecipientRef, RefKind, SendRequest, Surface, Via
from bot.domain.phone import NumberDisplay, PhoneNumber
from bot.domain.sends import Checked, NotSent, Placement, PreparedSend, SendState, prepared
from bot.metrics import Metrics
from bot.slack.conversation import ChannelPacer, SlackConversations
from tests.fakes.slack import BOT_TOKEN, FakeSlack

CHANNEL = "C0OPS"
TIMEOUT = 1  # the client gives up after this; the fake carries the post out and answers later
WHEN = datetime.now(UTC)
REASON = "Absent subscriber: the handset was off for the whole validity period"


@pytest.fixture
async def client(slack: FakeSlack) -> AsyncIterator[AsyncWebClient]:
    client = AsyncWebClient(token=BOT_TOKEN, base_url=slack.api_url, retry_handlers=[], timeout=TIMEOUT)
    yield client
    if client.session is not None:
        await client.session.close()


def a_send(thread_ts: str) -> PreparedSend:
    origin = Origin(Surface.COMMAND, "T0TEAM", "U0ALICE", CHANNEL, thread_ts=thread_ts)
    to = (RecipientRef(RefKind.NUMBER, "+14155550100"), RecipientRef(RefKind.NUMBER, "+14155550101"))
    request = SendRequest(via=Via.SMS, origin=origin, recipients=to, text="disk full", idempotency_key="trigger:n1")
    phones = (PhoneNumber("+14155550100"), PhoneNumber("+14155550101"))
    checked = Checked("ops may page on-call", "ops-sms", "OpsAlert", phones, "disk full")
    return prepared("s-notes-1", request, checked, NumberDisplay.MASKED)


def fresh(client: AsyncWebClient) -> SlackConversations:
    """One process's conversations (its memory of posts made is its own)."""
    return SlackConversations(client, Metrics(), ChannelPacer(0))


def in_thread(slack: FakeSlack, thread_ts: str) -> list[dict[str, Any]]:
    return [m for m in slack.messages[CHANNEL] if m.get("thread_ts") == thread_ts and m["ts"] != thread_ts]


def keys(slack: FakeSlack, thread_ts: str) -> list[str]:
    return [((m.get("metadata") or {}).get("event_payload") or {}).get("post") for m in in_thread(slack, thread_ts)]


async def parent(client: AsyncWebClient) -> str:
    return str((await client.chat_postMessage(channel=CHANNEL, text="the announcement"))["ts"])


async def test_a_note_slack_carried_out_without_answering_is_found_not_posted_again(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    thread = await parent(client)
    send = a_send(thread)
    failures = [RecipientDelivery(p.e164, "undelivered", REASON) for p in send.recipients]
    conversations = fresh(client)
    slack.state.answer_after["chat.postMessage"] = TIMEOUT + 2

    with pytest.raises(TimeoutError):  # Slack took it in; its answer is lost
        await conversations.open(send.request.origin).undelivered(send, Placement(thread), failures)
    slack.state.answer_after.clear()
    await conversations.open(send.request.origin).undelivered(send, Placement(thread), failures)  # tried again

    assert len(in_thread(slack, thread)) == 1
    (key,) = keys(slack, thread)
    assert key.startswith("s-notes-1:undelivered:")
    (looked,) = slack.attempts("conversations.replies")  # looked for, because its outcome was unknown
    assert looked.params.get("include_all_metadata") in (True, "true", "1")


async def test_a_note_made_is_not_made_again_in_this_process_and_another_process_finds_it(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    thread = await parent(client)
    send = a_send(thread)
    here = fresh(client)
    why = NotSent(SendState.DEDUPLICATED, window=timedelta(minutes=10))

    await here.open(send.request.origin).not_sent(send, Placement(thread), why)
    await here.open(send.request.origin).not_sent(send, Placement(thread), why)  # its "told" was not written: again
    assert keys(slack, thread) == ["s-notes-1:result"]
    assert slack.attempts("conversations.replies") == []  # known here: not even looked for

    elsewhere = fresh(client)  # another replica, after this one stopped
    await elsewhere.open(send.request.origin).not_sent(send, Placement(thread), why, careful=True)
    await elsewhere.open(send.request.origin).still_unknown(send, Placement(thread), WHEN)
    await fresh(client).open(send.request.origin).still_unknown(send, Placement(thread), WHEN)  # always looked for

    assert keys(slack, thread) == ["s-notes-1:result", "s-notes-1:unknown"]
    assert len(slack.attempts("conversations.replies")) == 3


async def test_a_phones_acknowledgement_told_again_is_looked_for_and_found(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    alert = await parent(client)
    origin = Origin(Surface.ALERT, "T0TEAM", "U0ALERTBOT", CHANNEL, thread_ts=alert)

    await fresh(client).open(origin).acknowledged_by_phone("+1 415-555-0100", "ana")
    await fresh(client).open(origin).acknowledged_by_phone("+1 415-555-0100", "ana", careful=True)

    notes = in_thread(slack, alert)
    assert [n["text"] for n in notes] == [notes[0]["text"]]
    assert "ana" in notes[0]["text"]
    assert keys(slack, alert) == [f"{CHANNEL}/{alert}:acknowledged"]


async def test_a_thread_that_cannot_be_read_is_counted_under_conversations_replies_and_the_note_still_posted(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    thread = await parent(client)
    send = a_send(thread)
    metrics = Metrics()
    slack.fail("conversations.replies", error="ratelimited_but_not_429")

    await (
        SlackConversations(client, metrics, ChannelPacer(0))
        .open(send.request.origin)
        .still_unknown(send, Placement(thread), WHEN)
    )

    assert keys(slack, thread) == ["s-notes-1:unknown"]
    counted = {
        sample.labels["method"]: sample.value
        for metric in metrics.slack_errors.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }
    assert counted == {"conversations.replies": 1.0}
