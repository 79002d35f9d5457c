"""Nothing lost, nothing doubled: idempotent deliveries, intents recorded before the ack, retries until D7
recovers, and what the send log keeps. The real app over loopback HTTP, fake Slack and fake D7, SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot.domain.sends import SendState
from tests.fakes.d7 import FakeD7, Reply
from tests.fakes.slack import FakeSlack
from tests.harness import App, database_down, no_sleep_d7, running_app, sign, slash_command

SMS = "/messages/v1/send"


@pytest.fixture
def slack(slack: FakeSlack) -> FakeSlack:
    slack.add_user("U0ALICE", "alice", "+1 415 555 0100")
    return slack


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    # The outbox's own backoff between rounds (after the client gave up) is short here.
    async with running_app(
        slack, fake_d7, tmp_path, gateway=no_sleep_d7(fake_d7), SEND_RETRY_BACKOFF=timedelta(milliseconds=50)
    ) as running:
        yield running


def delivery(slack: FakeSlack, text: str, trigger: str = "1337.42.retried") -> bytes:
    return slash_command("/sms", text, trigger_id=trigger, response_url=slack.response_url("cmd"))


async def post_retry(app: App, body: bytes, retry: int) -> int:
    headers = sign(body)
    if retry:
        headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
    return (await app.post(body, headers=headers)).status_code


async def test_same_delivery_four_times_in_sequence_sends_once(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    body = delivery(slack, "+14155550100 disk full")

    statuses = [await post_retry(app, body, retry) for retry in range(4)]
    await app.settle()

    assert statuses == [200, 200, 200, 200]
    assert len(fake_d7.bodies(SMS)) == 1
    assert len(slack.of("chat.postMessage")) == 2  # one announcement, one result
    records = await app.relay.storage.sends.audit()
    assert [(r.state, r.request.idempotency_key) for r in records] == [(SendState.ACCEPTED, "trigger:1337.42.retried")]


async def test_same_delivery_four_times_at_once_sends_once(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    body = delivery(slack, "+14155550100 disk full")

    statuses = await asyncio.gather(*(post_retry(app, body, retry) for retry in range(4)))
    await app.settle()

    assert statuses == [200, 200, 200, 200]
    assert len(fake_d7.bodies(SMS)) == 1
    assert len(await app.relay.storage.sends.audit()) == 1


async def test_intent_is_recorded_with_everything_the_audit_needs(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    await app.command("/sms", "+14155550100 <@U0ALICE|alice> disk full", trigger_id="1337.7.abc")
    await app.settle()

    (record,) = await app.relay.storage.sends.audit()
    (request_id,) = fake_d7.sends
    assert record.state is SendState.ACCEPTED
    assert record.request.idempotency_key == "trigger:1337.7.abc"
    assert (record.request.origin.team_id, record.request.user_id, record.request.channel_id) == (
        "T0TEAM",
        "U0ALICE",
        "C0OPS",
    )
    assert (record.sender, record.originator, record.rule) == ("ops-sms", "OpsAlert", "ops may page on-call")
    assert record.recipients == ["+14155550100"]  # the same number twice is texted once
    assert record.request.text == "disk full"
    assert (record.encoding, record.segments) == ("GSM-7", 1)
    assert record.request_id == request_id
    assert record.attempts == 1
    assert record.thread_ts == slack.posted_ts(0)
    assert record.posted_at is not None
    assert record.finished_at is not None


async def test_denials_and_invalid_input_are_recorded_and_told_once(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await app.command("/sms", "+442079460000 hello")
    await app.command("/sms", "+1555 hello")
    await app.settle()

    denied, invalid = await app.relay.storage.sends.audit()
    assert (denied.state, denied.refusal_kind) == (SendState.DENIED, "denied")
    assert denied.problems == ["+44 20 ••• 0000 is outside the numbers rule 'ops may page on-call' allows"]
    assert (invalid.state, invalid.refusal_kind) == (SendState.DENIED, "invalid")
    assert invalid.problems == ["'+1555' is not a valid phone number: too short"]
    assert fake_d7.requests == []
    assert len(slack.responses["cmd"]) == 2
    assert all(r.posted_at is not None for r in (denied, invalid))


async def test_d7_down_for_a_while_then_back_sends_each_intent_exactly_once(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    fake_d7.enqueue(*[Reply(503, path=SMS)] * 14)  # 3 intents x 4 client attempts = 12, and then some

    for i in range(3):
        await app.command("/sms", f"+14155550100 incident {i}")
    await app.settle()
    for _ in range(50):  # rescheduled intents come due again after their backoff
        if all(r.state.final and r.posted_at for r in await app.relay.storage.sends.audit()):
            break
        await asyncio.sleep(0.1)
        await app.settle()

    records = await app.relay.storage.sends.audit()
    assert [r.state for r in records] == [SendState.ACCEPTED] * 3
    assert len(fake_d7.sends) == 3
    contents = [b["messages"][0]["content"] for b in fake_d7.bodies(SMS)]
    assert len(contents) == 14 + 3  # every 503 and one success per intent
    assert {r.request_id for r in records} == set(fake_d7.sends)
    assert max(r.attempts for r in records) >= 2  # the outbox itself rescheduled, after the client gave up
    threads: dict[str, list[str]] = {}
    for post in slack.of("chat.postMessage"):
        if "thread_ts" in post:
            threads.setdefault(post["thread_ts"], []).append(post["text"])
    assert len(threads) == 3
    for texts in threads.values():
        assert sum("D7 unavailable (HTTP 503) — retrying" in t for t in texts) == 1
        assert "Accepted by D7" in texts[-1]
    assert all(r.attempts >= 1 for r in records)


async def test_d7_down_past_the_deadline_fails_and_says_so(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> None:
    fake_d7.enqueue(*[Reply(503, path=SMS)] * 100)
    async with running_app(
        slack,
        fake_d7,
        tmp_path,
        gateway=no_sleep_d7(fake_d7),
        SEND_RETRY_DEADLINE="1s",
        SEND_RETRY_BACKOFF=timedelta(milliseconds=50),
    ) as app:
        await app.command("/sms", "+14155550100 lost cause")
        for _ in range(60):
            await app.settle()
            (record,) = await app.relay.storage.sends.audit()
            if record.posted_at:
                break
            await asyncio.sleep(0.1)

    assert record.state is SendState.FAILED
    assert fake_d7.sends == {}
    *_, answer = slack.of("chat.postMessage")
    assert "D7 was unavailable (HTTP 503) after several attempts. Nothing was sent" in answer["text"]


async def test_database_down_at_ack_time_says_nothing_was_sent(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    with database_down():
        response = await app.command("/sms", "+14155550100 hello")
    await app.settle()

    assert response.status_code == 200
    assert "could not record your request" in response.json()["text"]
    assert fake_d7.requests == []


async def test_metrics_count_sends_and_expose_the_outbox(app: App, fake_d7: FakeD7) -> None:
    fake_d7.enqueue(Reply(402))
    await app.command("/sms", "+14155550100 one")
    await app.command("/sms", "+14155550100 two")
    await app.command("/sms", "+442079460000 three")
    await app.settle()

    text = (await app.http.get(f"{app.url}/metrics")).text

    assert 'relay_sends_total{outcome="failed",via="sms"} 1.0' in text
    assert 'relay_sends_total{outcome="accepted",via="sms"} 1.0' in text
    assert 'relay_sends_total{outcome="denied",via="sms"} 1.0' in text
    assert "relay_outbox_depth 0.0" in text
    assert 'relay_d7_send_seconds_count{via="sms"} 2.0' in text
    assert 'relay_ack_seconds_count{kind="command"} 3.0' in text
