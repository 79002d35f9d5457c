"""Texts phones send back, the pure parts and the stores: what a callback body is read as (table-driven), what a text
asks, the policy's ``inbound`` keys and their errors, and the inbound log and opt-out list (SQLite and the
in-memory twin, the same rules)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.domain import keys
from bot.domain.errors import PolicyFileError
from bot.domain.inbound import Asks, Inbound, OptOut, OptOutWay, Outcome, Unreadable, asks, read_inbound
from bot.domain.models import RecipientRef, RefKind
from bot.domain.phone import PhoneNumber
from bot.domain.policy import parse_policy, policy_warnings
from bot.domain.ports import InboundLog, OptOutList
from bot.sending.admission import Admission
from bot.sending.inbound import Inbox
from bot.sending.intake import Intake
from bot.sending.phone_texts import PhoneTexts
from bot.storage.database import Database
from bot.storage.engine import create_engine, migrate
from bot.storage.inbound import SqlInboundLog, SqlOptOuts
from tests.memory import (
    FakeClock,
    FakeConversations,
    FakeDirectory,
    MemoryInboundLog,
    MemoryOptOuts,
    MemorySendStore,
    MemorySettings,
)


@pytest.mark.parametrize(
    ("body", "phone", "text"),
    [
        (b"from=14155550100&to=OpsAlert&text=STOP", "+14155550100", "STOP"),  # SMS, form data
        (b"sender=%2B14155550100&message=hi+there", "+14155550100", "hi there"),
        (b'{"msisdn": "447911123456", "body": "yes"}', "+447911123456", "yes"),
        (b'{"originator": 14155550100, "content": "ok"}', "+14155550100", "ok"),  # a number as a number
        (b'{"from": "+1 (415) 555-0100", "content": {"text": "hello"}}', "+14155550100", "hello"),
        (b'{"from": "971501234567", "message": {"type": "text", "text": {"body": "hi"}}}', "+971501234567", "hi"),
        (b'{"data": {"from": "0014155550100", "text": "nested"}, "event": "mo"}', "+14155550100", "nested"),
        (b'[{"from": "14155550100", "text": "one in a list"}]', "+14155550100", "one in a list"),
        # Empty fields are not there: the first present with a value is read.
        (
            b'{"from": "", "sender": "14155550100", "text": "", "body": "first present"}',
            "+14155550100",
            "first present",
        ),
    ],
)
def test_the_common_shapes_are_read(body: bytes, phone: str, text: str) -> None:
    read = read_inbound(body)
    assert isinstance(read, Inbound)
    assert (read.phone.e164, read.text) == (phone, text)


def test_the_policy_names_fields_with_dotted_paths() -> None:
    body = json.dumps({"num": "14155550100", "payload": {"words": "hi"}, "text": "not this"}).encode()

    read = read_inbound(body, "num", "payload.words")

    assert isinstance(read, Inbound)
    assert (read.phone.e164, read.text) == ("+14155550100", "hi")
    assert read_inbound(body, "missing.path", None) == Unreadable(
        "no phone number in `missing.path`", ("num", "payload", "payload.words", "text")
    )


@pytest.mark.parametrize(
    ("body", "why", "keys"),
    [
        (b"", "the body is not an object with fields", ()),
        (b"\xff\xfe", "the body is not UTF-8", ()),
        (b"{oops", "the body is not valid JSON", ()),
        (b'{"num": "14155550100", "words": "secret"}', "no phone number in `from`, `sender`, `msisdn`, `originator`",
         ("num", "words")),
        (b'{"from": "OpsAlert", "text": "x"}', "the phone number in `from`, `sender`, `msisdn`, `originator` is not one",
         ("from", "text")),
        (b'{"from": "14155550100", "note": {"deep": {"er": 1}}}', "no text in `text`, `message`, `body`, `content`",
         ("from", "note", "note.deep", "note.deep.er")),
    ],
)  # fmt: skip
def test_what_cannot_be_read_says_why_and_names_its_keys_never_its_values(
    body: bytes, why: str, keys: tuple[str, ...]
) -> None:
    assert read_inbound(body) == Unreadable(why, keys)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("STOP", Asks.STOP),
        ("  stop\n", Asks.STOP),
        ("Unsubscribe", Asks.STOP),
        ("stopall", Asks.STOP),
        ("revoke", Asks.STOP),
        ("please stop", Asks.REPLY),  # whole message only
        ("Start", Asks.START),
        ("unstop", Asks.START),
        ("OPTIN", Asks.START),
        ("help", Asks.HELP),
        ("Info", Asks.HELP),
        ("ack", Asks.ACK),
        ("ACK now", Asks.REPLY),
        ("", Asks.REPLY),
    ],
)
def test_what_a_text_asks(text: str, expected: Asks) -> None:
    assert asks(text) is expected


def test_ack_words_come_from_the_policy() -> None:
    assert asks("got it", frozenset({"GOT IT", "ok"})) is Asks.ACK
    assert asks("OK", frozenset({"GOT IT", "ok"})) is Asks.ACK
    assert asks("ack", frozenset()) is Asks.REPLY


def test_an_answers_key_names_its_inbound_message() -> None:
    key = keys.answer("in-1", "stop:STOP")
    assert key == "answer:in-1:stop:STOP"
    assert keys.is_answer(key)
    assert not keys.is_answer(keys.command("answer"))


# ---------------------------------------------------------------- the policy


def test_the_inbound_keys_and_their_defaults() -> None:
    policy = parse_policy(
        {
            "version": 1,
            "defaults": {"admin_channel": "C0ADMIN"},
            "inbound": {"fields": {"from": "data.msisdn", "text": "data.text"}, "ack_words": ["ack", "Got it"]},
        }
    )
    assert (policy.inbound.fields.phone, policy.inbound.fields.text) == ("data.msisdn", "data.text")
    assert policy.inbound.ack_words == ["ack", "Got it"]
    assert policy.inbound_channel == "C0ADMIN"  # inbound.channel left out
    assert policy.inbound.help_text.endswith("Reply STOP to opt out, START to opt back in.")
    assert parse_policy({"version": 1}).inbound.ack_words == ["ACK"]


@pytest.mark.parametrize(
    ("inbound", "problem"),
    [
        ({"ack_words": ["ok", "Stop"]}, "inbound.ack_words: 'Stop' is a keyword phones use to opt out, opt in or ask"),
        ({"channel": "#inbox"}, "inbound.channel: '#inbox' is not a channel ID (C…/G…)"),
        ({"fields": {"from": "a", "phone": "b"}}, "inbound.fields: give the phone's field once: as phone or as from"),
        ({"fields": {"text": "data..text"}}, "inbound.fields.text: 'data..text' is not a field's name or a dotted"),
        ({"help_text": "  "}, "inbound.help_text: String should have at least 1 character"),
        ({"help_text": "ж" * 300}, "inbound.help_text: needs 5 SMS segments (Unicode); defaults.max_segments is 3"),
        ({"channel_id": "C0X"}, "inbound.channel_id: unknown key"),
    ],
)
def test_inbound_key_errors_name_the_path(inbound: dict[str, Any], problem: str) -> None:
    with pytest.raises(PolicyFileError) as raised:
        parse_policy({"version": 1, "defaults": {"max_segments": 3}, "inbound": inbound})
    assert problem in str(raised.value)


def test_check_warns_when_replies_have_nowhere_to_go() -> None:
    quiet = parse_policy({"version": 1, "inbound": {"help_text": "Acme ops. Reply STOP to opt out."}})
    assert [w.path for w in policy_warnings(quiet)] == ["inbound.channel"]
    assert policy_warnings(parse_policy({"version": 1})) == []  # no inbound key: nothing said


# ---------------------------------------------------------------- the stores


@dataclass
class Stores:
    log: InboundLog
    optouts: OptOutList
    pass_time: Callable[[timedelta], Awaitable[None]]


@pytest.fixture(params=["sqlite", "memory"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    if request.param == "memory":
        clock = FakeClock()

        async def advance(by: timedelta) -> None:
            clock.advance(by)

        yield Stores(MemoryInboundLog(clock), MemoryOptOuts(), advance)
        return
    engine = create_engine(f"sqlite:///{tmp_path / 'bot.db'}")
    await migrate(engine)
    database = Database(engine)

    async def wait(by: timedelta) -> None:
        await asyncio.sleep(by.total_seconds())

    yield Stores(SqlInboundLog(database), SqlOptOuts(database), wait)
    await database.aclose()


async def test_the_same_body_within_the_window_is_a_duplicate_and_after_it_a_new_message(stores: Stores) -> None:
    window = timedelta(milliseconds=50)
    first = await stores.log.receive(b"from=1&text=hi", "d1", window)
    again = await stores.log.receive(b"from=1&text=hi", "d1", window)
    other = await stores.log.receive(b"from=1&text=yo", "d2", window)
    await stores.pass_time(timedelta(milliseconds=120))
    later = await stores.log.receive(b"from=1&text=hi", "d1", window)

    assert first is not None
    assert other is not None
    assert later is not None
    assert again is None
    assert len({first.id, other.id, later.id}) == 3
    claimed = await stores.log.claim(10, timedelta(seconds=30))
    assert [r.id for r in claimed] == [first.id, other.id, later.id]  # the duplicate is not to be handled
    assert await stores.log.claim(10, timedelta(seconds=30)) == []  # leased


async def test_a_message_is_handled_by_one_worker_and_kept_with_what_was_done(stores: Stores) -> None:
    kept = await stores.log.receive(b"from=14155550100&text=yes", "d", timedelta(minutes=10))
    assert kept is not None
    (claimed,) = await stores.log.claim(10, timedelta(seconds=30))

    decided = claimed.read("+14155550100", "yes").did(Outcome.REPLIED, "send-1")
    await stores.log.keep(decided, datetime.now(UTC) + timedelta(hours=1), working=True)
    assert await stores.log.claim(10, timedelta(seconds=30)) == []  # still leased while it works on it
    await stores.log.keep(decided.noted("1700000000.000100"), None)

    assert await stores.log.claim(10, timedelta(seconds=30)) == []  # handled
    found = await stores.log.get(kept.id)
    assert found is not None
    assert (found.outcome, found.phone, found.text, found.send_id, found.note_ts, found.raw) == (
        Outcome.REPLIED,
        "+14155550100",
        "yes",
        "send-1",
        "1700000000.000100",
        b"from=14155550100&text=yes",
    )
    assert [r.id for r in (await stores.log.replies_to(["send-1", "send-2"]))["send-1"]] == [kept.id]


async def test_a_failed_try_is_due_again_later_with_its_count(stores: Stores) -> None:
    kept = await stores.log.receive(b"x", "d", timedelta(minutes=10))
    assert kept is not None
    (claimed,) = await stores.log.claim(10, timedelta(seconds=30))

    await stores.log.keep(claimed.tried(), datetime(2000, 1, 1, tzinfo=UTC))  # due at once

    (again,) = await stores.log.claim(10, timedelta(seconds=30))
    assert (again.id, again.attempts) == (kept.id, 1)


async def test_the_opt_out_list(stores: Stores) -> None:
    at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    first = OptOut("+14155550100", at, OptOutWay.TEXT, "STOP")

    assert await stores.optouts.opt_out(first)
    assert not await stores.optouts.opt_out(OptOut("+14155550100", at + timedelta(hours=1), OptOutWay.ADMIN, "U0A"))
    assert await stores.optouts.opt_out(OptOut("+14155550101", at + timedelta(hours=2), OptOutWay.ADMIN, "U0A"))

    assert await stores.optouts.opted_out(["+14155550100", "+14155550199"]) == {"+14155550100": first}
    assert [e.phone for e in await stores.optouts.listing(10)] == ["+14155550101", "+14155550100"]
    assert await stores.optouts.opt_in("+14155550100")
    assert not await stores.optouts.opt_in("+14155550100")
    assert [e.phone for e in await stores.optouts.listing(10)] == ["+14155550101"]


# ---------------------------------------------------------------- the core on the in-memory twins


class Notes:
    """``PhoneNotes`` that records what it would post."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, ...]] = []

    async def replied(self, channel_id: str, thread_ts: str | None, phone: str, text: str, inbound_id: str) -> str:
        self.posted.append(("replied", channel_id, phone, text))
        return f"ts-{len(self.posted)}"

    async def keyword(self, channel_id: str, thread_ts: str | None, phone: str, word: str, said: Any) -> str:
        self.posted.append(("keyword", channel_id, phone, word, str(said)))
        return f"ts-{len(self.posted)}"

    async def unreadable(self, channel_id: str, why: str, keys: Any) -> None:
        self.posted.append(("unreadable", channel_id, why, *keys))


def core() -> tuple[Inbox, MemorySendStore, MemoryOptOuts, Notes]:
    clock = FakeClock()
    policy = parse_policy(
        {
            "version": 1,
            "defaults": {"admin_channel": "C0ADMIN"},
            "senders": {"ops-sms": {"via": "sms", "originator": "OpsAlert"}},
            "inbound": {"channel": "C0INBOX"},
        }
    )
    sends, optouts, log, notes = MemorySendStore(clock), MemoryOptOuts(), MemoryInboundLog(clock), Notes()
    texts = PhoneTexts(
        policy=policy,
        optouts=optouts,
        history=sends,
        sends=sends,
        alert_log=sends,
        intake=Intake(sends, timedelta(minutes=15), lambda: None),
        notes=notes,
        conversations=FakeConversations(),
        settings=MemorySettings(),
        team_id="T0TEAM",
        bot_user_id="U0BOT",
    )
    return Inbox(log=log, texts=texts, secret="s" * 20, clock=clock), sends, optouts, notes


async def test_acting_again_after_a_crash_changes_nothing_twice() -> None:
    inbox, sends, optouts, notes = core()
    await inbox.receive(b"from=14155550100&text=STOP")
    (record,) = await inbox.log.claim(10, timedelta(seconds=30))

    decided = await inbox.texts.decide(record)
    await inbox.texts.act(decided)
    await inbox.texts.act(decided)  # the process died before it kept "handled": done again

    (answer,) = await sends.audit()
    assert answer.request.idempotency_key == f"answer:{record.id}:stop:STOP"
    assert (answer.request.text, answer.request.sender) == (
        "You will get no more texts from us. Reply START to opt back in.",
        "ops-sms",
    )
    assert (answer.request.origin.channel_id, answer.request.origin.thread_ts) == ("C0INBOX", None)
    assert list((await optouts.opted_out(["+14155550100"])).values()) == [
        OptOut("+14155550100", record.received_at, OptOutWay.TEXT, "STOP")
    ]
    assert notes.posted == []  # the answer's own story says it


async def test_an_unreadable_shape_is_told_once_and_a_failure_is_tried_again_later() -> None:
    inbox, _, _, notes = core()
    await inbox.receive(b'{"num": "1", "words": "private"}')
    await inbox.receive(b'{"num": "2", "words": "private too"}')
    assert [await inbox.work() for _ in range(3)] == [1, 1, 0]  # one message a lease
    assert notes.posted == [
        ("unreadable", "C0ADMIN", "no phone number in `from`, `sender`, `msisdn`, `originator`", "num", "words")
    ]

    async def down(*_: Any) -> str:
        raise ConnectionError("Slack is down (test)")

    notes.replied = down  # type: ignore[method-assign]
    await inbox.receive(b"from=14155550177&text=hello")
    assert await inbox.work() == 1
    (waiting,) = [r.record for r in inbox.log.rows.values() if r.record.phone == "+14155550177"]
    assert (waiting.outcome, waiting.attempts, waiting.note_ts) == (Outcome.INBOX, 1, None)
    assert await inbox.work() == 0  # not due yet


async def test_recipients_take_opted_out_phones_out_refusing_named_ones_and_leaving_group_members_out() -> None:
    policy = parse_policy(
        {
            "version": 1,
            "senders": {"ops-sms": {"via": "sms", "originator": "OpsAlert"}},
            "contacts": {"oncall": ["+14155550100", "+14155550101"]},
        }
    )
    optouts = MemoryOptOuts()
    at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    await optouts.opt_out(OptOut("+14155550100", at, OptOutWay.ADMIN, "U0ADMIN"))
    directory = FakeDirectory()
    directory.add_person("U0ANA", "ana", "+1 415 555 0100")
    admission = Admission(policy, directory, optouts)

    named = await admission.resolve((RecipientRef(RefKind.NUMBER, "+14155550100"),))
    person = await admission.resolve((RecipientRef(RefKind.USER, "U0ANA"),))
    group = await admission.resolve((RecipientRef(RefKind.CONTACTS, "oncall"),))
    kept, why = await admission.without_opted_out([PhoneNumber("+14155550100"), PhoneNumber("+14155550101")])

    until = ": it gets none until it texts START, or an admin runs `/sms optin`"
    assert [p.text for p in named.refusing] == [
        "+1 415 ••• 0100 has opted out of texts (<@U0ADMIN> opted it out)" + until
    ]
    assert [p.text for p in person.refusing] == [
        "@ana's phone +1 415 ••• 0100 has opted out of texts (<@U0ADMIN> opted it out)" + until
    ]
    assert ([n.e164 for n in group.numbers], group.refusing) == (["+14155550101"], [])
    assert group.left_out == (
        "+1 415 ••• 0100 (in group:oncall) has opted out of texts (<@U0ADMIN> opted it out)" + until,
    )
    assert ([n.e164 for n in kept], len(why)) == (["+14155550101"], 1)


def test_a_text_no_database_could_keep_and_json_nested_past_the_parser_are_read_safely() -> None:
    cut = read_inbound(b'{"from": "+14155550100", "text": "on my way \\ud83d"}')  # an emoji cut in half
    assert isinstance(cut, Inbound)
    assert cut.text == "on my way \ufffd"
    assert cut.text.encode("utf-8")  # keepable
    nested = read_inbound(b"[" * 100_000 + b"]" * 100_000)
    assert isinstance(nested, Unreadable)
    assert nested.why == "the body is JSON nested too deep"
