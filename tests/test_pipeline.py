"""The sending core's state machine, fast: the real Pipeline, AlertDesk, Teller and Admission on in-memory stores,
a fake gateway, fake conversations and a clock the test moves. No network, no database, no sleeping.

Each test asserts on the stored record, on exactly what the gateway was asked to send, and on what the
conversation was told.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest

from bot.domain.alerts import fingerprint
from bot.domain.errors import (
    D7AuthError,
    D7Error,
    D7InsufficientCreditError,
    D7OutcomeUnknownError,
    D7RateLimitedError,
    D7UnavailableError,
)
from bot.domain.events import Bus, RequestIdKnown
from bot.domain.models import AlertSummary, FiringAlert, Origin, RecipientRef, RefKind, SendRequest, Surface, Via
from bot.domain.phone import NumberDisplay, PhoneNumber
from bot.domain.policy import parse_policy
from bot.domain.ports import AlertLedger, SendStore
from bot.domain.sends import (
    Checked,
    NotSent,
    Outcome,
    Placement,
    PreparedSend,
    Refusal,
    RefusalKind,
    SendRecord,
    SendState,
    prepared,
)
from bot.metrics import Metrics
from bot.sending.admission import Admission
from bot.sending.alerts import AlertDesk
from bot.sending.intake import Intake, NotRecorded
from bot.sending.outbox import CLAIM_LEASE, Outbox
from bot.sending.pipeline import CRASHED, SEND_LEASE, Pipeline
from bot.sending.telling import Teller
from bot.storage.sends import RECOVERED
from tests.memory import (
    ANNOUNCED,
    START,
    FakeClock,
    FakeConversations,
    FakeDirectory,
    FakeGateway,
    GatewayCall,
    MemoryAlertLedger,
    MemoryDeliveryLog,
    MemorySendStore,
    Retried,
    Said,
    accepted,
    rejected,
)

DEADLINE = timedelta(minutes=10)
REPORT_URL = "https://relay.example.com/d7/reports/s3cret"
MASKED = NumberDisplay.MASKED

ANA, BEN, DAILY = PhoneNumber("+14155550110"), PhoneNumber("+14155550111"), PhoneNumber("+14155550199")
ONCALL_DB = (PhoneNumber("+14155550100"), PhoneNumber("+14155550101"))

POLICY = parse_policy(
    {
        "version": 1,
        "defaults": {"region": "US", "max_segments": 3, "show_numbers": "masked", "countries": ["US", "GB"]},
        "senders": {
            "ops-sms": {"via": "sms", "originator": "OpsAlert"},
            "support-wa": {"via": "whatsapp", "originator": "+971501234567"},
        },
        "contacts": {"oncall-db": ["+14155550100", "+14155550101"]},
        "rules": [
            {
                "name": "ops may page on-call",
                "slack_channels": ["C0OPS"],
                "users": ["*"],
                "senders": ["ops-sms"],
                "recipients": ["+1*", "group:oncall-db"],
                "max_recipients": 5,
            },
            {
                "name": "support agents on WhatsApp",
                "slack_channels": ["C0SUPPORT"],
                "users": ["S0SUPPORT"],
                "senders": ["support-wa"],
                "recipients": ["*"],
            },
        ],
        "alerts": [
            {
                "name": "prod critical",
                "slack_channels": ["C0ALERTS"],
                "match": "(?i)critical",
                "sender": "ops-sms",
                "to": ["group:oncall-db"],
                "dedupe_window": "10m",
            },
            {
                "name": "storm",
                "slack_channels": ["C0STORM"],
                "match": "(?i)firing",
                "sender": "ops-sms",
                "to": ["S0ONCALL"],
                "max_per_phone": {"count": 2, "per": "1h"},
            },
            {
                "name": "daily",
                "slack_channels": ["C0DAILY"],
                "match": "(?i)backup",
                "sender": "ops-sms",
                "to": ["+14155550199"],
                "max_per_phone": {"count": 1, "per": "1d"},
            },
        ],
    }
)
# An alert's recipients as the Slack side builds them from the rule's ``to``.
ALERT_TO = {
    "prod critical": (RecipientRef(RefKind.CONTACTS, "oncall-db"),),
    "storm": (RecipientRef(RefKind.USERGROUP, "S0ONCALL"),),
    "daily": (RecipientRef(RefKind.NUMBER, "+14155550199"),),
}
ALERT_CHANNEL = {"prod critical": "C0ALERTS", "storm": "C0STORM", "daily": "C0DAILY"}


@dataclass
class World:
    """The sending core on in-memory stores and fakes; one outbox worker is ``run``."""

    clock: FakeClock
    sends: MemorySendStore
    ledger: MemoryAlertLedger
    gateway: FakeGateway
    conversations: FakeConversations
    directory: FakeDirectory
    metrics: Metrics
    pipeline: Pipeline
    request_ids: list[str]

    async def submit(self, request: SendRequest) -> SendRecord:
        record = await self.sends.record(request, DEADLINE)
        assert record is not None
        return record

    async def run(self, worker: str = "worker-1", **timing: float) -> list[str]:
        """One outbox round: claim what is due and move each intent on (as ``Outbox._work`` does); ``timing``:
        the pipeline's ``announce_within`` / ``announced_within`` for this round."""
        claimed = await self.sends.claim(worker, 100, CLAIM_LEASE)
        pipeline = replace(self.pipeline, **timing) if timing else self.pipeline
        for record in claimed:
            await pipeline.handle(record)
        return [r.id for r in claimed]

    async def stored(self, send_id: str) -> SendRecord:
        record = await self.sends.get(send_id)
        assert record is not None
        return record

    def sent(self, outcome: str) -> float | None:
        return self.metrics.registry.get_sample_value("relay_sends_total", {"via": "sms", "outcome": outcome})


def sending_core(
    sends: SendStore,
    *,
    clock: FakeClock,
    ledger: AlertLedger,
    directory: FakeDirectory,
    gateway: FakeGateway,
    conversations: FakeConversations,
    metrics: Metrics,
    **pipeline: Any,
) -> Pipeline:
    """The real Admission, AlertDesk, Teller and Pipeline of ``POLICY`` on ``sends`` (in memory or SQL) and the
    fakes given; ``pipeline``: the Pipeline's optional parts (``report_url``, ``events``, ``intake``, …)."""
    admission = Admission(POLICY, directory)
    alerts = AlertDesk(
        policy=POLICY,
        admission=admission,
        ledger=ledger,
        sends=sends,
        alert_log=sends,
        directory=directory,
        reader=None,
        deadline=DEADLINE,
    )
    teller = Teller(
        sends=sends,
        deliveries=MemoryDeliveryLog(clock),
        alerts=alerts,
        conversations=conversations,
        show_numbers=MASKED,
        clock=clock,
    )
    return Pipeline(
        sends=sends,
        admission=admission,
        alerts=alerts,
        teller=teller,
        gateway=gateway,
        conversations=conversations,
        metrics=metrics,
        deadline=DEADLINE,
        clock=clock,
        **pipeline,
    )


@pytest.fixture
def world() -> World:
    clock = FakeClock()
    sends = MemorySendStore(clock)
    ledger = MemoryAlertLedger(clock, sends)
    gateway, conversations, directory = FakeGateway(), FakeConversations(), FakeDirectory()
    directory.add_person("U0ANA", "ana", "+1 415 555 0110")
    directory.add_person("U0BEN", "ben", "+1 415 555 0111")
    directory.add_person("U0CARL", "carl")
    directory.add_person("U0SAM", "sam", "+1 415 555 0120")
    directory.groups |= {"S0SUPPORT": ["U0SAM"], "S0ONCALL": ["U0ANA"]}
    directory.channels |= {"C0ALERTS": "alerts", "C0STORM": "storm", "C0DAILY": "backups"}
    metrics, request_ids = Metrics(), list[str]()
    events = Bus()  # the request_ids D7 answered, as delivery reports would hear them
    events.subscribe(RequestIdKnown, lambda e: request_ids.append(e.request_id))
    pipeline = sending_core(
        sends,
        clock=clock,
        ledger=ledger,
        directory=directory,
        gateway=gateway,
        conversations=conversations,
        metrics=metrics,
        report_url=REPORT_URL,
        events=events,
    )
    return World(clock, sends, ledger, gateway, conversations, directory, metrics, pipeline, request_ids)


def command(
    text: str = "disk full on db-1",
    *to: RecipientRef,
    key: str = "trigger:1",
    channel: str = "C0OPS",
    user: str = "U0ALICE",
    via: Via = Via.SMS,
) -> SendRequest:
    origin = Origin(Surface.COMMAND, "T0TEAM", user, channel, response_url="https://hooks.slack.com/commands/1")
    recipients = to or (number("+1 415 555 0100"),)
    return SendRequest(via=via, origin=origin, recipients=recipients, text=text, idempotency_key=key)


def number(raw: str) -> RecipientRef:
    return RecipientRef(RefKind.NUMBER, raw)


def alert(text: str, ts: str, rule: str = "prod critical") -> SendRequest:
    channel = ALERT_CHANNEL[rule]
    return SendRequest(
        via=Via.SMS,
        origin=Origin(Surface.ALERT, "T0TEAM", "B0GRAFANA", channel, thread_ts=ts),
        recipients=ALERT_TO[rule],
        text=text,
        idempotency_key=f"alert:{channel}:{ts}",
        sender="ops-sms",
        alert=FiringAlert(rule=rule, fingerprint=fingerprint(rule, text), message={"ts": ts, "text": text}),
    )


def sms(*to: PhoneNumber, text: str, originator: str = "OpsAlert") -> GatewayCall:
    return GatewayCall(Via.SMS, tuple(n.e164 for n in to), text, originator, REPORT_URL)


def ops_checked(text: str = "disk full on db-1", *to: PhoneNumber) -> Checked:
    return Checked("ops may page on-call", "ops-sms", "OpsAlert", to or (PhoneNumber("+14155550100"),), text)


# ------------------------------------------------------------ pending → sending → accepted


async def test_a_command_is_kept_sending_before_d7_then_accepted_and_told_once_with_its_request_id(
    world: World,
) -> None:
    record = await world.submit(command())
    during: list[SendRecord] = []

    async def look(call: GatewayCall) -> None:
        during.append(await world.stored(record.id))

    world.gateway.on_call = look

    assert await world.run() == [record.id]

    checked = ops_checked()
    send = prepared(record.id, record.request, checked, MASKED)
    assert world.gateway.calls == [sms(PhoneNumber("+14155550100"), text="disk full on db-1")]
    (before,) = during
    assert (before.state, before.attempts, before.checked, before.placement) == (
        SendState.SENDING,
        1,
        checked,
        ANNOUNCED,
    )
    assert world.sends.lease_until(record.id) is None
    stored = await world.stored(record.id)
    assert stored == replace(
        record,
        state=SendState.ACCEPTED,
        attempts=1,
        checked=checked,
        placement=ANNOUNCED,
        outcome=Outcome(result=accepted("req-1")),
        finished_at=START,
        posted_at=START,
        result_ts="result-1",
    )
    assert stored.request_id == "req-1"
    assert world.conversations.said == [
        Said("announce", record.request.origin, (send,)),
        Said("finish", record.request.origin, (send, ANNOUNCED, Outcome(result=accepted("req-1")), ())),
    ]
    assert world.request_ids == ["req-1"]
    assert world.sent("accepted") == 1.0

    world.clock.advance(timedelta(days=1))
    assert await world.run() == []  # told once: nothing is due again
    assert len(world.conversations.said) == 2
    assert len(world.gateway.calls) == 1


async def test_whatsapp_goes_from_the_rules_sender_number_with_the_send_id_as_cust_ref(world: World) -> None:
    request = command("Your order shipped", number("+44 20 7183 8750"), channel="C0SUPPORT", user="U0SAM")
    record = await world.submit(replace(request, via=Via.WHATSAPP))

    await world.run()

    assert world.gateway.calls == [
        GatewayCall(
            Via.WHATSAPP, ("+442071838750",), "Your order shipped", "+971501234567", REPORT_URL, cust_ref=record.id
        )
    ]
    stored = await world.stored(record.id)
    assert (stored.state, stored.sender, stored.originator, stored.rule) == (
        SendState.ACCEPTED,
        "support-wa",
        "+971501234567",
        "support agents on WhatsApp",
    )


async def test_a_duplicate_idempotency_key_is_not_kept_twice(world: World) -> None:
    first = await world.sends.record(command(key="trigger:7"), DEADLINE)

    again = await world.sends.record(command("other text", key="trigger:7"), DEADLINE)

    assert first is not None
    assert again is None
    assert [r.id for r in await world.sends.audit()] == [first.id]


async def test_the_announcement_failing_does_not_stop_the_text_and_is_posted_before_the_outcome(
    world: World,
) -> None:
    record = await world.submit(command())
    world.conversations.fail("announce")

    await world.run()

    send = prepared(record.id, record.request, ops_checked(), MASKED)
    assert world.gateway.calls == [sms(PhoneNumber("+14155550100"), text="disk full on db-1")]
    # The text did not wait; the story is told in order once Slack answers: announcement, then the result in it.
    assert world.conversations.methods == ["announce", "announce", "finish"]
    assert world.conversations.of("finish") == [(send, ANNOUNCED, Outcome(result=accepted("req-1")), ())]
    stored = await world.stored(record.id)
    assert (stored.state, stored.placement) == (SendState.ACCEPTED, ANNOUNCED)


async def test_an_announcement_slower_than_its_budget_does_not_hold_the_text(world: World) -> None:
    record = await world.submit(command())
    world.conversations.slow("announce", seconds=60)  # Slack answering in a minute

    async with asyncio.timeout(5):
        await world.run(announce_within=0.05, announced_within=0.2)

    assert world.gateway.calls == [sms(PhoneNumber("+14155550100"), text="disk full on db-1")]
    assert (await world.stored(record.id)).state is SendState.ACCEPTED


async def test_a_database_cut_after_the_announcement_keeps_it_for_the_next_try_not_posted_twice(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slack took the announcement, then the database failed before its place was kept with the send (the chaos
    soak's seed 12): the next try uses that announcement instead of posting another."""
    record = await world.submit(command())
    start = world.sends.start
    cut = [True]

    async def cut_once(*args: Any) -> SendRecord | None:
        if cut.pop() if cut else False:
            raise ConnectionResetError("the database went away")
        return await start(*args)

    monkeypatch.setattr(world.sends, "start", cut_once)
    await world.run()
    assert world.gateway.calls == []  # nothing sent: the send waits for its next try
    world.clock.advance(timedelta(minutes=1))
    await world.run()

    assert world.conversations.methods == ["announce", "finish"]
    assert len(world.gateway.calls) == 1
    stored = await world.stored(record.id)
    assert (stored.state, stored.placement) == (SendState.ACCEPTED, ANNOUNCED)


@pytest.mark.parametrize(("late", "careful"), [(timedelta(seconds=1), []), (timedelta(seconds=25), ["announce"])])
async def test_an_intent_first_tried_long_after_it_was_recorded_looks_for_its_announcement_first(
    world: World, late: timedelta, careful: list[str]
) -> None:
    """Another process may have announced it and stopped (or lost the database) before keeping where: with no
    attempt counted, its age says so (past 20 s; the outbox's lease is 30 s)."""
    await world.submit(command())
    world.clock.advance(late)

    await world.run()

    assert world.conversations.methods == ["announce", "finish"]
    assert world.conversations.careful == careful


# ------------------------------------------------------------ D7's verdicts: rejected, failed, unknown


async def test_a_rejected_send_is_final_and_told(world: World) -> None:
    record = await world.submit(command())
    world.gateway.answer(rejected("req-r"))

    await world.run()

    stored = await world.stored(record.id)
    assert (stored.state, stored.outcome, stored.posted_at) == (
        SendState.REJECTED,
        Outcome(result=rejected("req-r")),
        START,
    )
    assert world.conversations.of("finish")[0][2] == Outcome(result=rejected("req-r"))
    assert len(world.gateway.calls) == 1


@pytest.mark.parametrize(
    "error",
    [
        D7AuthError("the D7 token is missing or invalid", http_status=401, code="UNAUTHORIZED"),
        D7InsufficientCreditError("out of credit", http_status=402, code="INSUFFICIENT_CREDIT"),
    ],
    ids=["auth", "credit"],
)
async def test_a_d7_refusal_fails_the_send_at_once_and_it_is_never_retried(world: World, error: D7Error) -> None:
    record = await world.submit(command())
    world.gateway.answer(error)

    await world.run()
    world.clock.advance(DEADLINE * 2)
    await world.run()

    stored = await world.stored(record.id)
    assert (stored.state, stored.outcome, stored.last_error, stored.retry_noticed) == (
        SendState.FAILED,
        Outcome(error=error),
        error,
        False,
    )
    assert len(world.gateway.calls) == 1
    assert world.conversations.methods == ["announce", "finish"]
    assert world.conversations.of("finish")[0][2] == Outcome(error=error)
    assert world.request_ids == []
    failed = {"via": "sms", "error": type(error).__name__}
    assert world.metrics.registry.get_sample_value("relay_d7_errors_total", failed) == 1.0


async def test_an_answer_lost_in_flight_ends_unknown_and_is_never_resent(world: World) -> None:
    record = await world.submit(command())
    lost = D7OutcomeUnknownError("the connection closed before D7 answered")
    world.gateway.answer(lost)

    await world.run()
    world.clock.advance(timedelta(days=1))
    await world.run()

    stored = await world.stored(record.id)
    assert (stored.state, stored.outcome, stored.posted_at) == (SendState.UNKNOWN, Outcome(error=lost), START)
    assert len(world.gateway.calls) == 1
    assert world.conversations.of("finish")[0][2] == Outcome(error=lost)


async def test_a_crash_in_the_gateway_ends_unknown_and_is_never_resent(world: World) -> None:
    record = await world.submit(command())
    world.gateway.answer(RuntimeError("bug in the client"))

    await world.run()
    world.clock.advance(timedelta(days=1))
    await world.run()

    stored = await world.stored(record.id)
    assert stored.state is SendState.UNKNOWN
    assert stored.outcome is not None
    error = stored.outcome.error
    assert (type(error), str(error)) == (D7OutcomeUnknownError, CRASHED)
    assert len(world.gateway.calls) == 1
    assert world.conversations.methods == ["announce", "finish"]
    assert world.conversations.of("finish")[0][2] == stored.outcome
    assert world.sent("unknown") == 1.0


# ------------------------------------------------------------ refused before anything is sent


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (command(channel="C0RANDOM"), "<#C0RANDOM> is not allowed to send via SMS"),
        (
            command("hi", *(number(f"+1415555010{i}") for i in range(6))),
            "6 recipients is more than the 5 rule 'ops may page on-call' allows",
        ),
        (
            replace(command(channel="C0SUPPORT", user="U0ANA"), via=Via.WHATSAPP),
            "<@U0ANA> is not allowed to send via WhatsApp from <#C0SUPPORT>",
        ),
    ],
    ids=["channel", "count", "user"],
)
async def test_the_policy_denies_and_nothing_is_sent(world: World, request_: SendRequest, reason: str) -> None:
    record = await world.submit(request_)

    await world.run()

    refusal = Refusal(RefusalKind.DENIED, (reason,))
    stored = await world.stored(record.id)
    assert (stored.state, stored.refusal, stored.checked, stored.finished_at, stored.posted_at) == (
        SendState.DENIED,
        refusal,
        None,
        START,
        START,
    )
    assert world.gateway.calls == []
    assert world.conversations.said == [Said("refuse", request_.origin, (refusal,))]


@pytest.mark.parametrize(
    ("request_", "problems"),
    [
        (command("   "), ("the message is empty",)),
        (
            command(
                "hi",
                RecipientRef(RefKind.CONTACTS, "nope"),
                RecipientRef(RefKind.USER, "U0NOBODY"),
                RecipientRef(RefKind.USER, "U0CARL", "carl"),
                number("+14155550100"),
            ),
            (
                "there is no contact group 'nope' in the policy",
                "<@U0NOBODY> is not a member of this workspace",
                "@carl has no phone number in their Slack profile",
            ),
        ),
        (replace(command(), recipients=()), ("no recipients",)),
    ],
    ids=["empty", "unresolvable", "nobody"],
)
async def test_invalid_input_is_refused_with_every_problem_and_nothing_is_sent(
    world: World, request_: SendRequest, problems: tuple[str, ...]
) -> None:
    record = await world.submit(request_)

    await world.run()

    refusal = Refusal(RefusalKind.INVALID, problems)
    stored = await world.stored(record.id)
    assert (stored.state, stored.refusal, stored.problems) == (SendState.DENIED, refusal, list(problems))
    assert world.gateway.calls == []
    assert world.conversations.said == [Said("refuse", request_.origin, (refusal,))]
    assert world.sent("denied") == 1.0


# ------------------------------------------------------------ D7 unavailable: retried until the deadline


async def test_a_safe_failure_is_retried_with_backoff_and_retry_after_says_retrying_once_then_accepted(
    world: World,
) -> None:
    record = await world.submit(command())
    unavailable = D7UnavailableError("D7 answered 503", http_status=503)
    slow_down = D7RateLimitedError("too many requests", http_status=429, retry_after=30.0)
    world.gateway.answer(unavailable, slow_down)
    send = prepared(record.id, record.request, ops_checked(), MASKED)

    await world.run()

    stored = await world.stored(record.id)
    assert stored == replace(
        record,
        attempts=1,
        checked=ops_checked(),
        placement=ANNOUNCED,
        retry_noticed=True,
        last_error=unavailable,
    )
    assert world.sends.next_attempt_at(record.id) == START + timedelta(seconds=5)  # SEND_RETRY: 5 s after attempt 1
    assert world.conversations.said[1:] == [Said("retrying", record.request.origin, (send, ANNOUNCED, unavailable))]

    world.clock.advance(timedelta(seconds=4))
    assert await world.run() == []  # not due yet
    world.clock.advance(timedelta(seconds=1))
    assert await world.run() == [record.id]

    stored = await world.stored(record.id)
    assert (stored.state, stored.attempts, stored.last_error) == (SendState.PENDING, 2, slow_down)
    assert world.sends.next_attempt_at(record.id) == START + timedelta(seconds=35)  # D7's Retry-After wins

    world.clock.advance(timedelta(seconds=30))
    await world.run()

    stored = await world.stored(record.id)
    assert (stored.state, stored.attempts, stored.outcome, stored.posted_at) == (
        SendState.ACCEPTED,
        3,
        Outcome(result=accepted("req-3")),
        START + timedelta(seconds=35),
    )
    assert world.gateway.calls == [sms(PhoneNumber("+14155550100"), text="disk full on db-1")] * 3
    assert world.conversations.methods == ["announce", "retrying", "finish"]  # announced once, retrying said once
    assert world.conversations.of("finish") == [(send, ANNOUNCED, Outcome(result=accepted("req-3")), ())]
    reasons = ("D7UnavailableError", "D7RateLimitedError")
    assert [
        world.metrics.registry.get_sample_value("relay_d7_retries_total", {"via": "sms", "reason": r}) for r in reasons
    ] == [1.0, 1.0]


async def test_retries_inside_the_client_say_retrying_once_and_the_send_goes_in_one_round(world: World) -> None:
    record = await world.submit(command())
    first, second = D7UnavailableError("D7 answered 503"), D7UnavailableError("D7 answered 502")
    world.gateway.answer(Retried((first, second), accepted("req-9")))

    await world.run()

    send = prepared(record.id, record.request, ops_checked(), MASKED)
    assert world.conversations.said[1:] == [
        Said("retrying", record.request.origin, (send, ANNOUNCED, first)),
        Said("finish", record.request.origin, (send, ANNOUNCED, Outcome(result=accepted("req-9")), ())),
    ]
    stored = await world.stored(record.id)
    assert (stored.state, stored.retry_noticed, stored.attempts) == (SendState.ACCEPTED, True, 1)
    assert len(world.gateway.calls) == 1


async def test_still_unavailable_at_the_deadline_fails_with_the_deadline_message(world: World) -> None:
    record = await world.submit(command())
    world.gateway.answer(D7UnavailableError("503", http_status=503), D7UnavailableError("503", http_status=503))

    await world.run()
    world.clock.advance(timedelta(minutes=9, seconds=58))  # the next wait (10 s) would end after the deadline
    await world.run()

    stored = await world.stored(record.id)
    assert stored.state is SendState.FAILED
    assert stored.outcome is not None
    error = stored.outcome.error
    assert isinstance(error, D7UnavailableError)
    assert (str(error), error.http_status) == ("D7 stayed unavailable until the 10-minute deadline", 503)
    assert world.conversations.methods == ["announce", "retrying", "finish"]
    assert world.conversations.of("finish")[0][2] == stored.outcome
    assert len(world.gateway.calls) == 2
    world.clock.advance(timedelta(hours=1))
    assert await world.run() == []


async def test_a_retry_after_beyond_the_deadline_fails_at_once(world: World) -> None:
    record = await world.submit(command())
    world.gateway.answer(D7RateLimitedError("slow down", http_status=429, code="RATE_LIMIT", retry_after=900.0))

    await world.run()

    stored = await world.stored(record.id)
    assert stored.outcome is not None
    error = stored.outcome.error
    assert isinstance(error, D7UnavailableError)
    assert (stored.state, str(error), error.http_status, error.code) == (
        SendState.FAILED,
        "D7 stayed unavailable until the 10-minute deadline",
        429,
        "RATE_LIMIT",
    )
    assert world.conversations.methods == ["announce", "finish"]  # nothing to retry, so no "retrying"


# ------------------------------------------------------------ a restart, and another worker


async def stopped_mid_send(world: World) -> SendRecord:
    """An intent whose process stopped while D7 was being called (cancelled: nothing after it ran)."""
    record = await world.submit(command())

    async def stop(call: GatewayCall) -> None:
        raise asyncio.CancelledError

    world.gateway.on_call = stop
    with pytest.raises(asyncio.CancelledError):
        await world.run()
    world.gateway.on_call = None
    stored = await world.stored(record.id)
    assert (stored.state, stored.claimed_by) == (SendState.SENDING, "worker-1")
    return record


async def test_at_restart_a_send_left_sending_becomes_unknown_is_told_and_is_not_resent(world: World) -> None:
    record = await stopped_mid_send(world)
    world.clock.advance(timedelta(seconds=30))

    outbox = Outbox(
        sends=world.sends, pipeline=world.pipeline, wakeup=asyncio.Event(), metrics=world.metrics, single_process=True
    )
    async with outbox:
        pass  # entering recovers; leaving at once stops the loop before it claims

    stored = await world.stored(record.id)
    assert stored.outcome is not None
    assert (stored.state, stored.claimed_by, stored.finished_at, stored.posted_at) == (
        SendState.UNKNOWN,
        None,
        START + timedelta(seconds=30),
        None,
    )
    assert (type(stored.outcome.error), str(stored.outcome.error)) == (D7OutcomeUnknownError, RECOVERED)

    assert await world.run("worker-2") == [record.id]

    send = prepared(record.id, record.request, ops_checked(), MASKED)
    assert world.conversations.of("finish") == [(send, ANNOUNCED, stored.outcome, ())]
    assert (await world.stored(record.id)).posted_at == START + timedelta(seconds=30)
    assert len(world.gateway.calls) == 1


async def test_a_replica_recovers_a_send_left_sending_only_once_its_lease_ran_out(world: World) -> None:
    record = await stopped_mid_send(world)

    assert await world.sends.recover(everything=False) == 0
    world.clock.advance(SEND_LEASE)
    assert await world.sends.recover(everything=False) == 0  # the lease ends *after* this instant
    world.clock.advance(timedelta(seconds=1))
    assert await world.sends.recover(everything=False) == 1

    assert (await world.stored(record.id)).state is SendState.UNKNOWN
    await world.run()
    assert len(world.gateway.calls) == 1


async def test_the_outbox_measures_its_backlog_and_how_long_due_work_has_waited_for_a_worker(world: World) -> None:
    outbox = Outbox(
        sends=world.sends, pipeline=world.pipeline, wakeup=asyncio.Event(), metrics=world.metrics, single_process=True
    )

    def gauges() -> tuple[float | None, float | None]:
        sample = world.metrics.registry.get_sample_value
        return sample("relay_outbox_depth"), sample("relay_outbox_oldest_due_seconds")

    await world.submit(command(key="trigger:1"))
    world.clock.advance(timedelta(seconds=90))
    await world.submit(command(key="trigger:2"))
    assert await outbox.measure() == 2
    assert gauges() == (2.0, 90.0)  # no worker took the first for a minute and a half

    await world.run()
    assert await outbox.measure() == 0
    assert gauges() == (0.0, 0.0)


async def test_a_worker_that_lost_its_lease_sends_nothing_and_the_holder_sends_once(world: World) -> None:
    record = await world.submit(command())
    (mine,) = await world.sends.claim("worker-1", 10, CLAIM_LEASE)
    assert await world.sends.claim("worker-2", 10, CLAIM_LEASE) == []  # never one intent to two workers
    world.clock.advance(CLAIM_LEASE + timedelta(seconds=1))
    (theirs,) = await world.sends.claim("worker-2", 10, CLAIM_LEASE)

    await world.pipeline.handle(mine)

    assert world.gateway.calls == []
    stored = await world.stored(record.id)
    assert (stored.state, stored.claimed_by, stored.attempts) == (SendState.PENDING, "worker-2", 0)

    await world.pipeline.handle(theirs)

    assert world.gateway.calls == [sms(PhoneNumber("+14155550100"), text="disk full on db-1")]
    assert (await world.stored(record.id)).state is SendState.ACCEPTED
    # The loser had announced before it found out; the pipeline accepts a second announcement, never a second text.
    assert world.conversations.methods == ["announce", "announce", "finish"]


async def test_start_applies_only_from_pending_while_the_lease_is_held(world: World) -> None:
    record = await world.submit(command())
    (mine,) = await world.sends.claim("worker-1", 10, CLAIM_LEASE)

    started = await world.sends.start(mine, ops_checked(), ANNOUNCED, SEND_LEASE)
    again = await world.sends.start(mine, ops_checked(), ANNOUNCED, SEND_LEASE)
    stranger = await world.sends.start(replace(mine, claimed_by="worker-2"), ops_checked(), Placement(), SEND_LEASE)

    assert started is not None
    assert (started.state, started.attempts) == (SendState.SENDING, 1)
    assert (again, stranger) == (None, None)
    assert world.sends.lease_until(record.id) == START + SEND_LEASE


# ------------------------------------------------------------ telling


async def test_a_failed_post_is_told_again_with_backoff_and_the_text_is_not_resent(world: World) -> None:
    record = await world.submit(command())
    world.conversations.fail("finish")

    await world.run()

    stored = await world.stored(record.id)
    assert (stored.state, stored.posted_at, stored.claimed_by, stored.attempts) == (
        SendState.ACCEPTED,
        None,
        None,
        2,  # one D7 call, one failed post: the counter they share
    )
    # Telling backs off by time since the outcome, not by that counter: 4 s after the first failure.
    assert world.sends.next_attempt_at(record.id) == START + timedelta(seconds=4)

    world.clock.advance(timedelta(seconds=3))
    assert await world.run() == []
    world.clock.advance(timedelta(seconds=1))
    assert await world.run() == [record.id]

    send = prepared(record.id, record.request, ops_checked(), MASKED)
    told = (send, ANNOUNCED, Outcome(result=accepted("req-1")), ())
    assert world.conversations.of("finish") == [told, told]  # rebuilt from the record: the same story
    stored = await world.stored(record.id)
    assert (stored.posted_at, stored.result_ts) == (START + timedelta(seconds=4), "result-2")
    assert len(world.gateway.calls) == 1
    assert world.request_ids == ["req-1"]


async def test_a_refusal_that_cannot_be_posted_is_retried_after_4_s_then_as_long_as_it_has_failed(
    world: World,
) -> None:
    record = await world.submit(command(channel="C0RANDOM"))
    world.conversations.fail("refuse", times=3)

    await world.run()
    assert world.sends.next_attempt_at(record.id) == START + timedelta(seconds=4)
    world.clock.advance(timedelta(seconds=4))
    await world.run()
    assert world.sends.next_attempt_at(record.id) == START + timedelta(seconds=8)
    world.clock.advance(timedelta(seconds=4))
    await world.run()
    assert world.sends.next_attempt_at(record.id) == START + timedelta(seconds=16)
    world.clock.advance(timedelta(seconds=8))
    await world.run()

    stored = await world.stored(record.id)
    assert (stored.state, stored.attempts, stored.posted_at) == (
        SendState.DENIED,
        3,
        START + timedelta(seconds=16),
    )
    assert world.conversations.methods == ["refuse", "refuse", "refuse", "refuse"]


async def test_telling_gives_up_after_24_hours_without_a_result_message(world: World) -> None:
    record = await world.submit(command())
    world.conversations.fail("finish", times=100)

    await world.run()
    world.clock.advance(timedelta(hours=24))
    await world.run()  # exactly 24 h: still tried again

    assert (await world.stored(record.id)).posted_at is None
    assert world.sends.next_attempt_at(record.id) == START + timedelta(hours=24, seconds=30)  # at most 30 s

    world.clock.advance(timedelta(seconds=30))
    await world.run()

    stored = await world.stored(record.id)
    assert (stored.posted_at, stored.result_ts, stored.claimed_by) == (
        START + timedelta(hours=24, seconds=30),
        None,
        None,
    )
    assert len(world.conversations.of("finish")) == 3
    world.clock.advance(timedelta(days=1))
    assert await world.run() == []
    assert len(world.gateway.calls) == 1


# ------------------------------------------------------------ alerts: dedup


CRITICAL = "CRITICAL: disk 95% full on db-1"


def alert_checked(text: str = CRITICAL) -> Checked:
    return Checked("prod critical", "ops-sms", "OpsAlert", ONCALL_DB, text)


async def test_a_repeat_within_the_dedupe_window_is_not_texted_and_names_the_first(world: World) -> None:
    first = await world.submit(alert(CRITICAL, ts="1700000100.000100"))
    await world.run()
    world.clock.advance(timedelta(minutes=2))
    repeat = await world.submit(alert("CRITICAL: disk 98% full on db-1", ts="1700000220.000100"))

    await world.run()

    assert world.gateway.calls == [sms(*ONCALL_DB, text=CRITICAL)]
    assert world.conversations.of("finish") == [
        (
            prepared(first.id, first.request, alert_checked(), MASKED),
            Placement("1700000100.000100"),  # an alert's story goes in its own thread, unannounced
            Outcome(result=accepted("req-1")),
            (),
        )
    ]
    stored = await world.stored(repeat.id)
    assert (stored.state, stored.duplicate_of, stored.rule, stored.posted_at) == (
        SendState.DEDUPLICATED,
        first.id,
        "prod critical",
        START + timedelta(minutes=2),
    )
    shown = PreparedSend(
        repeat.id,
        repeat.request,
        Checked("prod critical", "ops-sms", "", (), "CRITICAL: disk 98% full on db-1"),
        MASKED,
    )
    why = NotSent(SendState.DEDUPLICATED, window=timedelta(minutes=10), first=await world.stored(first.id))
    assert world.conversations.said[-1] == Said("not_sent", repeat.request.origin, (shown, Placement(), why))
    assert world.conversations.methods == ["finish", "not_sent"]


async def test_the_same_alert_after_the_dedupe_window_is_texted_again(world: World) -> None:
    await world.submit(alert(CRITICAL, ts="1700000100.000100"))
    await world.run()
    world.clock.advance(timedelta(minutes=10))
    again = await world.submit(alert(CRITICAL, ts="1700000700.000100"))

    await world.run()

    assert world.gateway.calls == [sms(*ONCALL_DB, text=CRITICAL)] * 2
    assert (await world.stored(again.id)).state is SendState.ACCEPTED


@pytest.mark.parametrize(
    ("answer", "first_state", "repeat_state"),
    [
        (D7InsufficientCreditError("out of credit", http_status=402), SendState.FAILED, SendState.ACCEPTED),
        (rejected("req-r"), SendState.REJECTED, SendState.ACCEPTED),
        (D7OutcomeUnknownError("no answer"), SendState.UNKNOWN, SendState.DEDUPLICATED),  # it may have gone out
    ],
    ids=["failed", "rejected", "unknown"],
)
async def test_an_alert_whose_text_did_not_go_out_lets_its_next_repeat_be_texted(
    world: World, answer: Any, first_state: SendState, repeat_state: SendState
) -> None:
    first = await world.submit(alert(CRITICAL, ts="1700000100.000100"))
    world.gateway.answer(answer)
    await world.run()
    world.clock.advance(timedelta(minutes=1))
    repeat = await world.submit(alert(CRITICAL, ts="1700000160.000100"))

    await world.run()

    assert (await world.stored(first.id)).state is first_state
    assert (await world.stored(repeat.id)).state is repeat_state
    texted = 2 if repeat_state is SendState.ACCEPTED else 1
    assert world.gateway.calls == [sms(*ONCALL_DB, text=CRITICAL)] * texted


async def test_an_alert_nobody_can_be_reached_for_is_refused_in_its_thread_and_its_repeat_may_be_texted(
    world: World,
) -> None:
    world.directory.groups["S0ONCALL"] = ["U0CARL"]
    first = await world.submit(alert("FIRING: api down", ts="1700000100.000100", rule="storm"))

    await world.run()

    refusal = Refusal(RefusalKind.INVALID, ("@carl has no phone number in their Slack profile",))
    assert (await world.stored(first.id)).refusal == refusal
    assert world.conversations.said == [Said("refuse", first.request.origin, (refusal,))]
    world.directory.groups["S0ONCALL"] = ["U0ANA"]
    repeat = await world.submit(alert("FIRING: api down", ts="1700000160.000100", rule="storm"))
    await world.run()
    assert world.gateway.calls == [sms(ANA, text="FIRING: api down")]
    assert (await world.stored(repeat.id)).state is SendState.ACCEPTED


# ------------------------------------------------------------ alerts: per-phone limits and summaries


STORM = ("FIRING: disk full on db-a", "FIRING: api down", "FIRING: queue backlog", "FIRING: cert expiring")


async def storm(world: World) -> list[SendRecord]:
    """Four alerts a minute apart under 'storm' (2 per phone per hour): ana from the first, ben from the second."""
    records = []
    for i, text in enumerate(STORM):
        if i == 1:
            world.directory.groups["S0ONCALL"] = ["U0ANA", "U0BEN"]
        records.append(await world.submit(alert(text, ts=f"17000001{i}0.000100", rule="storm")))
        await world.run()
        world.clock.advance(timedelta(minutes=1))
    return records


def summaries(records: list[SendRecord]) -> list[SendRecord]:
    return [r for r in records if r.request.origin.surface is Surface.SUMMARY]


async def test_a_phone_over_its_limit_is_held_for_its_summary_while_the_others_are_texted(world: World) -> None:
    a3 = (await storm(world))[2]

    assert world.gateway.calls == [
        sms(ANA, text=STORM[0]),
        sms(ANA, BEN, text=STORM[1]),
        sms(BEN, text=STORM[2]),  # ana had her 2 this hour
    ]
    names = {ANA.e164: "ana", BEN.e164: "ben"}
    checked = Checked("storm", "ops-sms", "OpsAlert", (BEN,), STORM[2], names=names, held=(ANA,))
    stored = await world.stored(a3.id)
    assert (stored.state, stored.checked, stored.held) == (SendState.ACCEPTED, checked, [ANA.e164])
    told = replace(prepared(a3.id, a3.request, checked, MASKED), held_until=START + timedelta(hours=1))
    assert world.conversations.of("finish")[2] == (
        told,
        Placement(a3.request.origin.thread_ts),
        Outcome(result=accepted("req-3")),
        (),
    )


async def test_an_alert_over_the_limit_for_every_phone_is_bundled_and_its_thread_says_when_the_summary_comes(
    world: World,
) -> None:
    a4 = (await storm(world))[3]

    names = {ANA.e164: "ana", BEN.e164: "ben"}
    checked = Checked("storm", "ops-sms", "OpsAlert", (), STORM[3], names=names, held=(ANA, BEN))
    stored = await world.stored(a4.id)
    assert (stored.state, stored.checked, stored.posted_at) == (
        SendState.BUNDLED,
        checked,
        START + timedelta(minutes=3),
    )
    shown = replace(prepared(a4.id, a4.request, checked, MASKED), held_until=START + timedelta(hours=1))
    why = NotSent(SendState.BUNDLED, window=timedelta(hours=1), limit=2)
    assert world.conversations.said[-1] == Said("not_sent", a4.request.origin, (shown, Placement(), why))
    assert len(world.gateway.calls) == 3


async def test_each_held_phone_gets_one_summary_intent_due_at_the_end_of_its_window(world: World) -> None:
    *_, a3, a4 = await storm(world)

    for_ana, for_ben = summaries(await world.sends.audit())
    assert for_ana.request == SendRequest(
        via=Via.SMS,
        origin=replace(a3.request.origin, surface=Surface.SUMMARY, response_url=None),
        recipients=(number(ANA.e164),),
        text="",
        idempotency_key=f"summary:storm:{ANA.e164}:{START.isoformat()}",
        sender="ops-sms",
        alert=AlertSummary(rule="storm", phone=ANA.e164, window_start=START),
    )
    ben_window = START + timedelta(minutes=1)
    assert (for_ben.request.origin.thread_ts, for_ben.request.alert) == (
        a4.request.origin.thread_ts,
        AlertSummary(rule="storm", phone=BEN.e164, window_start=ben_window),
    )
    assert [(world.sends.next_attempt_at(s.id), s.deadline_at, s.state) for s in (for_ana, for_ben)] == [
        (START + timedelta(hours=1), START + timedelta(hours=1) + DEADLINE, SendState.PENDING),
        (ben_window + timedelta(hours=1), ben_window + timedelta(hours=1) + DEADLINE, SendState.PENDING),
    ]
    world.clock.advance(timedelta(minutes=50))
    assert await world.run() == []  # not before the window ends


async def test_a_due_summary_texts_its_phone_once_and_its_reply_names_the_phone_sender_and_exact_text(
    world: World,
) -> None:
    a3 = (await storm(world))[2]
    for_ana, _ = summaries(await world.sends.audit())
    world.clock.now = START + timedelta(hours=1)

    assert await world.run() == [for_ana.id]

    text = "+2 more alerts in #storm since 09:02 UTC - latest: FIRING: cert expiring"
    assert world.gateway.calls[3:] == [sms(ANA, text=text)]
    checked = Checked("storm", "ops-sms", "OpsAlert", (ANA,), text, names={ANA.e164: "ana"})
    send, placement, outcome, statuses = world.conversations.of("finish")[-1]
    # It once named nobody ("Summary texted to  as ** (``)"): the reply must name what went to the gateway.
    assert send == prepared(for_ana.id, for_ana.request, checked, MASKED)
    assert ([n.e164 for n in send.recipients], send.originator, send.sender, send.text) == (
        list(world.gateway.calls[3].recipients),
        world.gateway.calls[3].originator,
        "ops-sms",
        world.gateway.calls[3].text,
    )
    assert (placement, outcome, statuses) == (
        Placement(a3.request.origin.thread_ts),
        Outcome(result=accepted("req-4")),
        (),
    )
    stored = await world.stored(for_ana.id)
    assert (stored.state, stored.checked, stored.posted_at) == (SendState.ACCEPTED, checked, world.clock.now)

    world.clock.advance(timedelta(minutes=1))  # ben's window ends a minute later
    await world.run()
    assert world.gateway.calls[4:] == [
        sms(BEN, text="+1 more alert in #storm since 09:03 UTC - latest: FIRING: cert expiring")
    ]
    world.clock.advance(timedelta(hours=2))
    assert await world.run() == []
    assert len(world.gateway.calls) == 5


async def test_a_summary_told_late_from_its_stored_record_still_names_its_phone_sender_and_text(world: World) -> None:
    await storm(world)
    for_ana, _ = summaries(await world.sends.audit())
    world.clock.now = START + timedelta(hours=1)
    world.conversations.fail("finish")

    await world.run()
    world.clock.advance(timedelta(seconds=8))
    await world.run()

    call = world.gateway.calls[3]
    first, second = world.conversations.of("finish")[-2:]
    assert first == second
    send = second[0]
    assert (tuple(n.e164 for n in send.recipients), send.originator, send.sender, send.text) == (
        call.recipients,
        call.originator,
        "ops-sms",
        call.text,
    )
    assert (await world.stored(for_ana.id)).result_ts == "result-5"


# ------------------------------------------------------------ bugs in bot/ (fail today)


async def test_an_alert_checked_again_after_its_group_grew_is_still_texted(world: World) -> None:
    record = await world.submit(alert("FIRING: api down", ts="1700000100.000100", rule="storm"))
    (claimed,) = await world.sends.claim("worker-1", 10, CLAIM_LEASE)
    await world.pipeline.alerts.take(claimed)  # worker-1 took the quota, then its process was killed
    world.directory.groups["S0ONCALL"] = ["U0ANA", "U0BEN"]
    world.clock.advance(CLAIM_LEASE + timedelta(seconds=1))

    await world.run("worker-2")

    assert world.gateway.calls == [sms(ANA, BEN, text="FIRING: api down")]
    assert (await world.stored(record.id)).state is SendState.ACCEPTED


async def test_a_summary_sent_after_a_day_long_window_is_told_again_when_slack_fails(world: World) -> None:
    await world.submit(alert("backup failed on db-1", ts="1700000100.000100", rule="daily"))
    await world.run()
    world.clock.advance(timedelta(minutes=1))
    await world.submit(alert("backup failed on db-2", ts="1700000160.000100", rule="daily"))
    await world.run()
    (summary,) = summaries(await world.sends.audit())
    world.clock.now = START + timedelta(days=1)
    world.conversations.fail("finish", times=2)

    await world.run()  # texted; the post fails
    world.clock.advance(timedelta(minutes=2))
    await world.run()  # Slack still down two minutes after the summary went out

    assert world.gateway.calls[-1] == sms(
        DAILY, text="+1 more alert in #backups since 09:01 UTC - latest: backup failed on db-2"
    )
    stored = await world.stored(summary.id)
    assert (stored.state, stored.posted_at) == (SendState.ACCEPTED, None)  # told later, not given up


# ------------------------------------------------------------ an intent recorded after its sender was told it was not


class LateRecording:
    """A database that keeps an insert, but only after ``delay`` (packets delivered late): the caller may stop
    waiting, the insert still lands."""

    def __init__(self, sends: MemorySendStore, delay: float) -> None:
        self.sends = sends
        self.delay = delay

    async def record(
        self, request: SendRequest, deadline: timedelta, not_before: Any = None, recorder: str | None = None
    ) -> SendRecord | None:
        async def late() -> SendRecord | None:
            await asyncio.sleep(self.delay)
            return await self.sends.record(request, deadline, recorder=recorder)

        return await asyncio.shield(asyncio.ensure_future(late()))


async def test_an_intent_that_lands_after_its_sender_was_told_it_was_not_recorded_is_refused_not_sent(
    world: World,
) -> None:
    intake = Intake(LateRecording(world.sends, delay=0.1), DEADLINE, lambda: None, within=0.02)  # type: ignore[arg-type]

    with pytest.raises(NotRecorded):
        await intake.record(command())  # the ack says "could not record, nothing was sent"
    await asyncio.sleep(0.2)  # ... and then the insert lands
    (late,) = await world.sends.audit()
    await replace(world.pipeline, intake=intake).handle((await world.sends.claim("worker-1", 10, CLAIM_LEASE))[0])

    assert world.gateway.calls == []
    stored = await world.stored(late.id)
    assert (stored.state, stored.refusal_kind) == (SendState.DENIED, RefusalKind.UNRECORDED)
    assert world.conversations.methods == ["refuse"]
