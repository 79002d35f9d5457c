"""Slack failing under the real app: chat.postMessage down, rate-limited or hanging, look-ups failing, connections
refused. Acks stay under Slack's 3 s, no text goes twice, texts do not wait for Slack's posts, every story reaches
its thread (the announcement first, the result in its thread) once Slack is back, and nothing tries again faster
than its backoff. Outages last a few seconds here instead of the issue's 20 s, to keep CI short: what the bot does
does not depend on their length, only how many times it tries does, and that is asserted against the backoff."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot.app import SLACK_TIMEOUT
from bot.domain.sends import SendRecord, SendState
from bot.sending.pipeline import ANNOUNCE_WITHIN, CHECK_RETRY
from bot.sending.telling import TELL_RETRY
from bot.storage.schema import sends
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import Call, FakeSlack
from tests.harness import App, no_sleep_d7, running_app

SMS = "/messages/v1/send"
ACK_WITHIN = 3.0  # Slack's limit for an acknowledgement
TOLD_WITHIN = 30.0  # the issue: every result in its thread within 30 s of the faulty dependency recovering
SENT_WITHIN = ANNOUNCE_WITHIN + 1  # a text waits for its announcement 3 s at most, then goes anyway
# Waits are bounded a little past what is asserted, so that a miss fails on the assertion that names it.
WAIT_SENT = SENT_WITHIN + 5
WAIT_TOLD = TOLD_WITHIN + 5
NUMBERS = [f"+1415555{i:04d}" for i in range(100, 110)]  # one phone per send: D7's request_id names the send

# The harness's policy without its WhatsApp rule for the S0SUPPORT user group: a send from #ops then needs no Slack
# look-up at all (with that rule it looks up S0SUPPORT's members first: see the xfail test below).
NO_GROUP_RULES = """
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
"""


class StampedCalls(list[Call]):
    """The fake Slack's call log with each call stamped on arrival (monotonic, like D7's ``Recorded.at``): the gaps
    between tries are what a backoff is about."""

    def __init__(self) -> None:
        super().__init__()
        self._at: dict[int, float] = {}

    def append(self, call: Call) -> None:
        self._at[id(call)] = time.monotonic()
        super().append(call)

    def at(self, call: Call) -> float:
        return self._at[id(call)]


@pytest.fixture
def slack(slack: FakeSlack) -> FakeSlack:
    slack.calls = StampedCalls()
    slack.add_user("U0ALICE", "alice", "+1 415 555 0100")
    slack.add_user("U0BOB", "bob", "+1 415 555 0101")
    slack.add_user("U0DAN", "dan", "+1 415 555 0102")
    slack.state.usergroups["S0PAGERS"] = ["U0BOB", "U0DAN"]
    return slack


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path, gateway=no_sleep_d7(fake_d7)) as running:
        yield running


def arrived(slack: FakeSlack, call: Call) -> float:
    calls = slack.calls
    assert isinstance(calls, StampedCalls)
    return calls.at(call)


async def until(condition: Callable[[], bool], seconds: float, what: str) -> float:
    """Wait (polling) until ``condition()`` holds, at most ``seconds``; the monotonic time it first held."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        await asyncio.sleep(0.02)
    return time.monotonic()


async def acked_in(app: App, text: str) -> float:
    """Post ``/sms text`` from #ops; the seconds its ack took. The ack is always empty: the story is told later."""
    started = time.monotonic()
    response = await app.command("/sms", text)
    took = time.monotonic() - started
    assert (response.status_code, response.text) == (200, "")
    return took


def texts(d7: FakeD7) -> list[str]:
    return sorted(b["messages"][0]["content"] for b in d7.bodies(SMS))


def posted(slack: FakeSlack) -> list[Call]:
    """The chat.postMessage calls Slack took and answered ok, in the order they arrived."""
    return [c for c in slack.attempts("chat.postMessage") if c.ok]


def story(slack: FakeSlack, d7: FakeD7, number: str, text: str) -> tuple[Call, Call]:
    """The one announcement of ``text`` and the one reply in its thread, which names the request_id D7 gave the
    send to ``number`` and arrived after the announcement."""
    (request_id,) = [rid for rid, send in d7.sends.items() if send.recipients == [number]]
    calls = posted(slack)
    announcements = [c for c in calls if "thread_ts" not in c.params and c.params["text"].endswith(f": {text}")]
    assert len(announcements) == 1, [c.params["text"] for c in announcements]
    (announcement,) = announcements
    assert isinstance(announcement.answer, dict)
    replies = [c for c in calls if c.params.get("thread_ts") == announcement.answer["ts"]]
    assert len(replies) == 1, [c.params["text"] for c in replies]
    (result,) = replies
    assert f":white_check_mark: *Accepted by D7* · request_id `{request_id}`" in result.params["text"]
    assert calls.index(announcement) < calls.index(result)
    return announcement, result


async def next_attempt_at(app: App, send_id: str) -> datetime:
    async with app.relay.storage.database.connect() as conn:
        query = sa.select(sends.c.next_attempt_at).where(sends.c.id == send_id)
        at: datetime = (await conn.execute(query)).scalar_one()
    return at


async def the_record(app: App) -> SendRecord:
    (record,) = await app.relay.storage.sends.audit()
    return record


def nothing_private(slack: FakeSlack) -> bool:
    """No ephemeral note to the requester (response_url or chat.postEphemeral) instead of the thread."""
    return slack.responses == {} and slack.attempts("chat.postEphemeral") == []


# ------------------------------------------------------------ chat.postMessage down


async def test_post_message_503_texts_go_at_once_and_every_story_reaches_its_thread_after_recovery(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    slack.fail("chat.postMessage", 503)  # until recover()

    acks = [await acked_in(app, f"{number} outage {i}") for i, number in enumerate(NUMBERS)]
    last_ack = time.monotonic()
    all_sent = await until(lambda: len(fake_d7.bodies(SMS)) == 10, WAIT_SENT, "10 texts at D7")
    sent_while_down = texts(fake_d7)
    await asyncio.sleep(2)  # Slack stays down a while after the texts went
    tries_while_down = slack.attempts("chat.postMessage")
    slack.recover()
    recovered = time.monotonic()
    told = await until(lambda: len(posted(slack)) == 20, WAIT_TOLD, "10 announcements and 10 results")
    await app.settle()

    assert max(acks) < ACK_WITHIN, acks
    assert sent_while_down == sorted(f"outage {i}" for i in range(10))
    assert all_sent - last_ack < SENT_WITHIN
    assert texts(fake_d7) == sent_while_down  # exactly once each
    assert told - recovered < TOLD_WITHIN
    for i, number in enumerate(NUMBERS):
        story(slack, fake_d7, number, f"outage {i}")
    # Per send while Slack was down: the announcement (given up at once on a 503: the channel's burst of 10), then
    # telling's first try (the announcement again, looked for first), at the channel's pace of a post a second;
    # telling's next try waits TELL_RETRY, which outlasts the outage. Never more than two per send.
    assert 10 < len(tries_while_down) <= 2 * 10, len(tries_while_down)
    assert {c.status for c in tries_while_down} == {503}
    assert nothing_private(slack)
    records = await app.relay.storage.sends.audit()
    assert [(r.state, r.posted_at is not None) for r in records] == [(SendState.ACCEPTED, True)] * 10


async def test_result_post_503_after_the_announcement_is_tried_again_in_the_thread_not_told_privately(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    fake_d7.delay = 1.0  # Slack fails while D7 is answering: the announcement went, the result cannot
    await acked_in(app, f"{NUMBERS[0]} disk full")
    await until(lambda: len(posted(slack)) == 1, 2, "the announcement")
    slack.fail("chat.postMessage", 503)  # until recover()
    await until(lambda: len(slack.attempts("chat.postMessage")) == 2, 5, "the result's post")
    await until(lambda: app.relay.outbox.in_flight == 0, 2, "the send let go")
    record = await the_record(app)
    retry_in = (await next_attempt_at(app, record.id)).timestamp() - time.time()

    assert texts(fake_d7) == ["disk full"]
    assert slack.attempts("chat.postMessage")[1].status == 503
    assert (record.state, record.posted_at) == (SendState.ACCEPTED, None)
    assert record.thread_ts == posted(slack)[0].answer["ts"]  # type: ignore[index]  # the result goes there, later
    # Telling tries again after TELL_RETRY (4 s doubling; 8 s here, the D7 call counts as an attempt); the test
    # above waits for such a retry to land.
    assert TELL_RETRY.base_delay - 1 < retry_in <= TELL_RETRY.max_delay, retry_in
    assert nothing_private(slack)


# ------------------------------------------------------------ Slack's per-channel rate


async def test_strict_channel_rate_every_story_reaches_its_thread_and_429s_stay_few(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    # Slack takes about 1 post/s per channel after a short burst; 5/s after a burst of 2 has the same shape (two
    # posts, then 429 with Retry-After: 1) and keeps this test to seconds. Four sends: their announcements all fit in
    # the 3 s a text waits for its announcement, so each story is announced before its text goes.
    slack.strict_rates(5, burst=2)
    n = 4

    acks = await asyncio.gather(*(acked_in(app, f"{NUMBERS[i]} burst {i}") for i in range(n)))
    acked = time.monotonic()
    sent = await until(lambda: len(fake_d7.bodies(SMS)) == n, WAIT_SENT, "every text at D7")
    await until(lambda: len(posted(slack)) == 2 * n, WAIT_TOLD, "every announcement and result")
    await app.settle()

    assert max(acks) < ACK_WITHIN, acks
    assert sent - acked < SENT_WITHIN
    assert texts(fake_d7) == sorted(f"burst {i}" for i in range(n))
    for i, number in enumerate(NUMBERS[:n]):
        story(slack, fake_d7, number, f"burst {i}")
    tries = slack.attempts("chat.postMessage")
    limited = slack.rate_limited("chat.postMessage")
    # Until Slack first says 429 in the channel, its posts go out at once: the first wave (the n announcements)
    # meets the limit. From then on the channel's posts take turns and each 429 is waited out (Retry-After: 1 s), in
    # which the bucket fills up again (2 tokens at 5/s take 0.4 s): the rest go through with at most a couple more.
    assert 0 < len(limited) <= n + 2, [c.status for c in tries]
    # Each post turned away is tried again only after its Retry-After (1 s): never hammered.
    for i, turned_away in enumerate(tries):
        if turned_away.status == 429:
            again = next(c for c in tries[i + 1 :] if c.params["text"] == turned_away.params["text"])
            assert arrived(slack, again) - arrived(slack, turned_away) >= 1.0
    assert nothing_private(slack)


# ------------------------------------------------------------ a look-up failing before D7 is called

# CHECK_RETRY waits 1-2 s after the first try (2 s with equal jitter), then 2-4 s: a 3 s outage sees two tries at
# most (the issue saw 13-16 a second), and the third comes after it.
LOOKUP_OUTAGE = 3.0


@pytest.mark.parametrize(
    ("method", "fault", "key", "text", "problem"),
    [
        (
            "usergroups.users.list",
            {"status": 500},
            ("usergroup", "S0PAGERS"),
            "<!subteam^S0PAGERS|@pagers> db-1 down",
            "Slack's usergroups.users.list failed (HTTP 500)",
        ),
        (
            "users.info",
            {"error": "fatal_error"},
            ("user", "U0BOB"),
            "<@U0BOB|bob> db-1 down",
            "Slack's users.info failed (fatal_error)",
        ),
        (
            "users.info",
            {"error": "missing_scope"},
            ("user", "U0BOB"),
            "<@U0BOB|bob> db-1 down",
            "Slack refused users.info (missing_scope): an admin must add users:read to the app and reinstall it",
        ),
    ],
    ids=["usergroups-http-500", "users-info-fatal-error", "users-info-missing-scope"],
)
async def test_lookup_failing_backs_off_then_the_text_goes_once_after_recovery(
    app: App,
    slack: FakeSlack,
    fake_d7: FakeD7,
    caplog: pytest.LogCaptureFixture,
    method: str,
    fault: dict[str, Any],
    key: tuple[str, str],
    text: str,
    problem: str,
) -> None:
    slack.fail(method, seconds=LOOKUP_OUTAGE, **fault)
    recovers = time.monotonic() + LOOKUP_OUTAGE

    ack = await acked_in(app, text)
    sent = await until(lambda: len(fake_d7.bodies(SMS)) == 1, LOOKUP_OUTAGE + WAIT_TOLD, "the text at D7")
    await app.settle()

    assert ack < ACK_WITHIN
    param, value = key
    tries = [c for c in slack.attempts(method) if c.params.get(param) == value]
    failed = [c for c in tries if c.fault == "fail"]
    assert [c.ok for c in tries] == [False] * len(failed) + [True]  # tried until it worked, then no more
    assert 1 <= len(failed) <= math.floor(math.log2(LOOKUP_OUTAGE / CHECK_RETRY.base_delay)) + 2, len(failed)
    gaps = [arrived(slack, b) - arrived(slack, a) for a, b in itertools.pairwise(tries)]
    for attempt, gap in enumerate(gaps, start=1):  # never sooner than the backoff's least wait (half, with jitter)
        assert gap >= CHECK_RETRY.base_delay * 2 ** (attempt - 1) / 2, gaps
    assert sent - recovers < TOLD_WITHIN
    assert texts(fake_d7) == ["db-1 down"]  # once
    (body,) = fake_d7.bodies(SMS)
    group = method == "usergroups.users.list"
    assert body["messages"][0]["recipients"] == (["+14155550101", "+14155550102"] if group else ["+14155550101"])
    record = await the_record(app)
    assert (record.state, record.attempts) == (SendState.ACCEPTED, len(failed) + 1)  # each failed check counted
    waits = [r.getMessage() for r in caplog.records if " waits: " in r.getMessage()]
    assert len(waits) == 1, waits  # logged once per send, not once per try
    assert f"waits: {problem}; trying again in " in waits[0]
    announcement, result = slack.of("chat.postMessage")
    assert announcement["text"] == f"An SMS from <@U0ALICE> to {2 if group else 1} recipient(s): db-1 down"
    assert result["text"].startswith(":white_check_mark: *Accepted by D7*")
    assert nothing_private(slack)


@pytest.fixture
async def app_with_3s_deadline(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path, gateway=no_sleep_d7(fake_d7), SEND_RETRY_DEADLINE="3s") as app:
        yield app


async def test_lookup_failing_past_the_send_deadline_is_refused_in_plain_words_and_nothing_is_sent(
    app_with_3s_deadline: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    # A 3 s deadline: the first try fails, the next comes 1-2 s later and fails, and the one after that would be
    # 2-4 s later still, past the deadline: refused then, after exactly two tries.
    app = app_with_3s_deadline
    slack.fail("usergroups.users.list", 500)  # until recover(): longer than the send's 3 s

    ack = await acked_in(app, "<!subteam^S0PAGERS|@pagers> db-1 down")
    acked = time.monotonic()
    refused = await until(lambda: "cmd" in slack.responses, 3 + 1, "the refusal")
    await app.settle()

    assert ack < ACK_WITHIN
    assert refused - acked < 3  # refused as soon as the next try would be past the deadline
    problem = "Slack's usergroups.users.list failed (HTTP 500)"
    assert slack.responses["cmd"] == [
        {
            "text": f"Not sent: {problem}",
            "blocks": [
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": ":x: *Not sent:* Slack did not answer the bot's look-ups in time. Nothing was sent.",
                    },
                },
                {"type": "section", "text": {"type": "mrkdwn", "text": f"• {problem}"}},
            ],
            "response_type": "ephemeral",
            "replace_original": False,
        }
    ]
    assert fake_d7.requests == []
    assert slack.attempts("chat.postMessage") == []
    assert len(slack.attempts("usergroups.users.list")) == 2
    record = await the_record(app)
    assert (record.state, record.refusal_kind, record.problems) == (SendState.DENIED, "unavailable", [problem])
    assert record.posted_at is not None


async def test_send_that_no_user_group_rule_could_allow_does_not_wait_for_user_group_lookups(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    slack.fail("usergroups.users.list", 500)  # until recover()

    ack = await acked_in(app, f"{NUMBERS[0]} disk full")
    sent = await until(lambda: len(fake_d7.bodies(SMS)) == 1, 2, "the text at D7")

    assert ack < ACK_WITHIN
    assert sent > 0
    assert slack.attempts("usergroups.users.list") == []


# ------------------------------------------------------------ Slack unreachable


@pytest.fixture
async def app_without_group_rules(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path, policy=NO_GROUP_RULES, gateway=no_sleep_d7(fake_d7)) as app:
        yield app


async def test_slack_refusing_connections_after_the_ack_texts_at_once_and_tells_in_order_after(
    app_without_group_rules: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    app = app_without_group_rules
    # The command reaches the bot on the bot's own port, so refusing just before it is, as the bot sees it, Slack
    # going away right after the ack (without racing the outbox for the announcement).
    slack.refuse_connections(seconds=3)
    ack = await acked_in(app, f"{NUMBERS[0]} unreachable")
    acked = time.monotonic()
    sent = await until(lambda: len(fake_d7.bodies(SMS)) == 1, WAIT_SENT, "the text at D7")
    sent_while_refused = slack.refusing
    await until(lambda: not slack.refusing, 5, "Slack listening again")
    recovered = time.monotonic()
    told = await until(lambda: len(posted(slack)) == 2, WAIT_TOLD, "the announcement and the result")
    await app.settle()

    assert ack < ACK_WITHIN
    assert sent - acked < SENT_WITHIN
    assert sent_while_refused
    assert told - recovered < TOLD_WITHIN
    assert texts(fake_d7) == ["unreachable"]
    story(slack, fake_d7, NUMBERS[0], "unreachable")
    assert nothing_private(slack)
    assert (await the_record(app)).state is SendState.ACCEPTED


# ------------------------------------------------------------ Slack answering too late


@contextmanager
def slack_hangs(slack: FakeSlack, method: str) -> Iterator[None]:
    """``method`` answers after 45 s, longer than the client waits; at the end Slack answers at once again and
    hangs up on the calls still waiting (the bot's shutdown would otherwise wait for them)."""
    slack.state.delays[method] = 45
    try:
        yield
    finally:
        slack.state.delays.clear()
        slack.refuse_connections()
        slack.accept_connections()


async def test_post_message_answering_after_45_s_holds_no_text_and_the_stories_follow_when_slack_answers(
    app_without_group_rules: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    app = app_without_group_rules
    with slack_hangs(slack, "chat.postMessage"):
        first_ack = await acked_in(app, f"{NUMBERS[0]} slow 0")
        acked = time.monotonic()
        first_sent = await until(lambda: len(fake_d7.bodies(SMS)) == 1, WAIT_SENT, "the first text at D7")
        # The first announcement still waits for Slack (within the client's own timeout): it holds no text.
        second_ack = await acked_in(app, f"{NUMBERS[1]} slow 1")
        acked_again = time.monotonic()
        second_sent = await until(lambda: len(fake_d7.bodies(SMS)) == 2, WAIT_SENT, "the second text at D7")
        health = await app.http.get(f"{app.url}/healthz")
        records = await app.relay.storage.sends.audit()
        # Past the client's timeout, telling looks for the announcement it could not confirm, and posts it again.
        await until(lambda: len(slack.attempts("chat.postMessage")) >= 3, SLACK_TIMEOUT + 5, "telling's post")
    recovered = time.monotonic()  # Slack answers again, and dropped the calls it had left hanging
    told = await until(lambda: len(posted(slack)) == 4, WAIT_TOLD, "both stories")
    await app.settle()

    assert max(first_ack, second_ack) < ACK_WITHIN
    assert first_sent - acked < SENT_WITHIN
    assert second_sent - acked_again < SENT_WITHIN  # not queued behind the post that holds the channel
    assert texts(fake_d7) == ["slow 0", "slow 1"]  # once each
    assert (health.status_code, health.json()["status"]) == (200, "ok")
    assert [(r.state, r.posted_at) for r in records] == [(SendState.ACCEPTED, None)] * 2  # told when Slack answers
    # A post whose answer never came is looked for before it is posted again (here: not found, never carried out).
    assert slack.attempts("conversations.history")
    assert told - recovered < TOLD_WITHIN
    story(slack, fake_d7, NUMBERS[0], "slow 0")
    story(slack, fake_d7, NUMBERS[1], "slow 1")
    assert nothing_private(slack)


async def test_lookup_slack_never_answers_is_given_up_after_the_client_timeout_and_tried_again(
    app: App, slack: FakeSlack, fake_d7: FakeD7, caplog: pytest.LogCaptureFixture
) -> None:
    # A look-up rather than a post: nothing else bounds it (an announcement has its own 3 s), so the client's
    # timeout is what is seen, 10 s after the ack.
    with slack_hangs(slack, "users.info"):
        ack = await acked_in(app, "<@U0BOB|bob> db-1 down")
        await until(lambda: len(slack.attempts("users.info")) == 1, 2, "the look-up")
        hung = time.monotonic()
        await until(lambda: app.relay.outbox.in_flight == 0, SLACK_TIMEOUT + 2, "the look-up given up")
        let_go = time.monotonic()
        record = await the_record(app)
        retry_in = (await next_attempt_at(app, record.id)).timestamp() - time.time()

    assert ack < ACK_WITHIN
    assert let_go - hung > SLACK_TIMEOUT - 1
    assert (record.state, record.attempts) == (SendState.PENDING, 1)
    assert 0 < retry_in <= CHECK_RETRY.base_delay, retry_in
    assert fake_d7.requests == []
    waits = [r.getMessage() for r in caplog.records if " waits: " in r.getMessage()]
    assert len(waits) == 1, waits
    assert "waits: Slack's users.info did not answer (TimeoutError); trying again in " in waits[0]


# ------------------------------------------------------------ Slack carrying a post out but answering late

SLOW_SENDS = 5


def stories_by_key(slack: FakeSlack) -> dict[str, int]:
    """How many messages Slack holds of each of the bot's posts (its metadata names the send and the part)."""
    held: dict[str, int] = {}
    for kept in slack.messages.values():
        for message in kept:
            key = ((message.get("metadata") or {}).get("event_payload") or {}).get("post")
            if key is not None:
                held[key] = held.get(key, 0) + 1
    return held


async def test_posts_slack_carries_out_but_answers_after_45_s_are_found_not_posted_twice(
    app_without_group_rules: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    """The issue's scenario: chat.postMessage carried out at once, answered after 45 s. The first call is let run
    to its own timeout; before posting again, the bot looks for its post (message metadata) and finds it."""
    app = app_without_group_rules
    slack.state.answer_after["chat.postMessage"] = 45
    acks = await asyncio.gather(*(acked_in(app, f"{NUMBERS[i]} late {i}") for i in range(SLOW_SENDS)))
    await until(lambda: len(fake_d7.bodies(SMS)) == SLOW_SENDS, WAIT_SENT, "every text at D7")
    records: list[SendRecord] = []

    async def all_told() -> bool:
        nonlocal records
        records = await app.relay.storage.sends.audit()
        return len(records) == SLOW_SENDS and all(r.posted_at is not None for r in records)

    deadline = time.monotonic() + 3 * SLACK_TIMEOUT + 3 * TELL_RETRY.base_delay + 10
    while not await all_told():
        assert time.monotonic() < deadline, [(r.state, r.posted_at) for r in records]
        await asyncio.sleep(0.1)
    slack.state.answer_after.clear()
    slack.refuse_connections()  # hang up on the answers still waiting
    slack.accept_connections()
    await app.settle()

    assert max(acks) < ACK_WITHIN
    assert texts(fake_d7) == sorted(f"late {i}" for i in range(SLOW_SENDS))  # once each
    held = stories_by_key(slack)
    assert sorted(held) == sorted(f"{r.id}:{part}" for r in records for part in ("announcement", "result"))
    assert set(held.values()) == {1}, held  # each announcement and each result once in the channel
    for record in records:  # each result in its own announcement's thread
        (announcement,) = [m for m in slack.messages["C0OPS"] if _key(m) == f"{record.id}:announcement"]
        (result,) = [m for m in slack.messages["C0OPS"] if _key(m) == f"{record.id}:result"]
        assert result["thread_ts"] == announcement["ts"] == record.placement.thread_ts
    looked = slack.attempts("conversations.history") + slack.attempts("conversations.replies")
    assert looked, "the bot looked for its posts before posting again"
    assert all(c.params.get("include_all_metadata") in (True, "true", "1") for c in looked)
    assert nothing_private(slack)


def _key(message: dict[str, Any]) -> str | None:
    return ((message.get("metadata") or {}).get("event_payload") or {}).get("post")


async def test_a_burst_in_one_channel_is_told_at_slacks_pace_without_meeting_its_limit(
    app_without_group_rules: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    """Slack takes about a post a second per channel after a burst (the fake: 10, then 1/s). The bot paces ahead of
    it: a burst of sends is told at that pace, without posts answered 429 and waiting out Retry-After.
    (``bench.channel_burst`` runs the issue's 30 sends: told 48 s after the last text, Slack's pace being 50 s.)"""
    app = app_without_group_rules
    n = 9  # 18 posts: 10 at once, then 8 at a second each
    await asyncio.gather(*(acked_in(app, f"{NUMBERS[i]} pace {i}") for i in range(n)))
    last_text = await until(lambda: len(fake_d7.bodies(SMS)) == n, WAIT_SENT, "every text at D7")
    told = await until(lambda: len(posted(slack)) == 2 * n, WAIT_TOLD, "every announcement and result")
    await app.settle()

    assert told - last_text < (2 * n - 10) / 1.0 + 3  # Slack's pace, give or take its first second
    assert len(slack.rate_limited("chat.postMessage")) <= 1
    for i in range(n):
        story(slack, fake_d7, NUMBERS[i], f"pace {i}")
