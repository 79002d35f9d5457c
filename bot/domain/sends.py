"""A send's life as values: what checking decided, why nothing went, how it ended, where its story is told.

    SendRecord                  one intent as stored, moved on only by its named transitions
    ├── request: SendRequest    what was asked (never changes)
    ├── state: SendState        pending → sending → accepted | rejected | failed | unknown; or denied,
    │                           deduplicated, bundled before anything is sent
    ├── checked: Checked        rule, sender, phone numbers and the text as it goes (once checking passed)
    ├── refusal: Refusal        why it was not sent (denied)
    ├── placement: Placement    the thread where the story continues, or private to the requester
    └── outcome: Outcome        D7's verdict, or the error

``PreparedSend`` is a checked send with what telling it needs (its SMS sizing, how numbers are shown).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property

from bot.domain.encoding import SmsInfo, analyze
from bot.domain.errors import D7Error, D7OutcomeUnknownError
from bot.domain.models import AlertInfo, SendRequest, SendResult, SendStatus, Surface, Via
from bot.domain.phone import NumberDisplay, PhoneNumber
from bot.domain.templates import TemplateUse

# An intent recorded for a person is only its recorder's (``SendRecord.recorded_by``) until the recorder confirms
# that it told them "recorded"; a recorder that has not confirmed it this long after recording it is presumed
# stopped, and any worker may then take the intent, to refuse it (its sender may have been told "not recorded").
RECORDER_GONE = timedelta(seconds=30)
# A result message ("card") is rewritten at most about this often while delivery reports keep coming (the first
# report after a quiet spell shows at once): a broadcast's thousand reports cost a handful of chat.update calls,
# well inside chat.update's Tier 3 (50 a minute per workspace), and the last statuses always show.
CARD_EVERY = timedelta(seconds=5)


class LeaseLost(Exception):
    """Another worker holds this intent now (this one was presumed dead): it must not move it on or tell it."""


class SendState(StrEnum):
    """Where an intent stands. ``pending`` and ``sending`` are the only states that can still change."""

    PENDING = "pending"  # recorded, not yet sent (or waiting to retry a send that provably did not happen)
    SENDING = "sending"  # handed to D7; if the process dies now, the outcome is unknown
    DENIED = "denied"  # refused before sending: by the policy, or invalid input
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FAILED = "failed"  # D7 said no, or stayed unavailable until the deadline: nothing was sent
    UNKNOWN = "unknown"  # may or may not have been sent: never resent automatically
    DEDUPLICATED = "deduplicated"  # an alert already texted within its rule's dedupe window
    BUNDLED = "bundled"  # an alert held back by a per-phone limit for every recipient: in the summary instead

    @property
    def final(self) -> bool:
        return self not in (SendState.PENDING, SendState.SENDING)

    @property
    def nothing_went_out(self) -> bool:
        """Final, and certainly no text left: an alert's dedup entry may be given to its next repeat."""
        return self in (SendState.DENIED, SendState.FAILED, SendState.REJECTED)


class RefusalKind(StrEnum):
    INVALID = "invalid"  # what was typed cannot be sent
    DENIED = "denied"  # the policy says no
    UNRECORDED = "unrecorded"  # its sender was (or may have been) told it could not be recorded in time
    UNAVAILABLE = "unavailable"  # what the check needs (Slack's look-ups) stayed unavailable until the deadline
    OVER_BUDGET = "over_budget"  # it would overrun one of the policy's budgets (``limits``)


@dataclass(frozen=True)
class Refusal:
    """Why a request was not sent; shown only to the requester (an alert's: in its thread)."""

    kind: RefusalKind
    problems: tuple[str, ...]


@dataclass(frozen=True)
class Placement:
    """Where the story continues after the announcement."""

    thread_ts: str | None = None
    private: bool = False  # only the requester can be told (the bot cannot post in the channel)


class PartState(StrEnum):
    """Where one of a send's D7 requests ended (a send to more phones than one request takes goes in several)."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"  # D7 answered 200 "rejected": nothing went to these phones
    FAILED = "failed"  # D7 said no, or stayed unavailable: nothing went to these phones
    UNKNOWN = "unknown"  # D7's answer was lost: these phones may or may not have been texted
    NOT_SENT = "not_sent"  # never asked: an earlier request of the send failed


@dataclass(frozen=True)
class Part:
    """One D7 request of a send that went in several: its slice of the send's recipients (``first``, ``count``, in
    the order checking found them) and how it ended."""

    first: int
    count: int
    state: PartState
    request_id: str | None = None  # accepted or rejected: D7's id of this request
    error: str | None = None  # failed or unknown: what went wrong, in words (shown; the send's error is the first)

    @property
    def went_out(self) -> bool:
        """Texts may have left for these phones (reports, look-ups and the card count them)."""
        return self.state in (PartState.ACCEPTED, PartState.UNKNOWN)


@dataclass(frozen=True)
class Outcome:
    """How the send ended: a D7 verdict (accepted / rejected) or an error.

    A send to more phones than one D7 request takes went in several (``parts``, in order; empty when it went in
    one): ``result`` is then the first request's answer, and the send counts as accepted once that one was."""

    result: SendResult | None = None
    error: D7Error | None = None
    parts: tuple[Part, ...] = ()

    @property
    def state(self) -> SendState:
        if self.result is not None:
            return SendState.ACCEPTED if self.result.status is SendStatus.ACCEPTED else SendState.REJECTED
        return SendState.UNKNOWN if isinstance(self.error, D7OutcomeUnknownError) else SendState.FAILED

    @property
    def request_id(self) -> str | None:
        return self.result.request_id if self.result is not None else None

    @property
    def request_ids(self) -> tuple[str, ...]:
        """Every request id D7 gave the send: one, or one per request that it answered."""
        if self.parts:
            return tuple(p.request_id for p in self.parts if p.request_id is not None)
        return (self.result.request_id,) if self.result is not None else ()

    @property
    def accepted_ids(self) -> tuple[str, ...]:
        """The request ids whose texts went out (what delivery look-ups ask about)."""
        if self.parts:
            return tuple(p.request_id for p in self.parts if p.state is PartState.ACCEPTED and p.request_id)
        return (self.result.request_id,) if self.result is not None and self.result.accepted else ()

    def not_sent(self, recipients: tuple[str, ...]) -> list[tuple[str, Part]]:
        """The phones of ``recipients`` (the send's, in order) that certainly got nothing, with their request."""
        return [
            (number, part)
            for part in self.parts
            if not part.went_out
            for number in recipients[part.first : part.first + part.count]
        ]


@dataclass(frozen=True)
class KeptAnswer:
    """D7's answer to a send as the local journal kept it while the database did not take it."""

    send_id: str
    worker: str | None  # the worker that held the send when D7 answered (its ``claimed_by``)
    outcome: Outcome


@dataclass(frozen=True)
class Checked:
    """What checking a request decided: the rule, the sender, who gets it and the exact text."""

    rule: str
    sender: str
    originator: str
    recipients: tuple[PhoneNumber, ...]  # texted now
    text: str  # as it goes to the phones (an alert's: rendered from its rule's template)
    names: Mapping[str, str] = field(default_factory=dict)  # E.164 → Slack name, when it came from a profile
    held: tuple[PhoneNumber, ...] = ()  # alerts: held back by the rule's per-phone limit, in the summary instead
    unreached: tuple[str, ...] = ()  # alerts: recipients that could not be resolved, and why
    on_call: Mapping[str, str] = field(default_factory=dict)  # schedule → the Slack name of who was on call for it
    template: TemplateUse | None = None  # WhatsApp: the approved template and its values (``text``: filled in)


@dataclass(frozen=True)
class PreparedSend:
    """A checked send, with what telling its story needs. Built only by ``prepared``."""

    send_id: str
    request: SendRequest
    checked: Checked
    show_numbers: NumberDisplay
    held_until: datetime | None = None  # alerts: when the first held-back phone gets its summary
    # Alerts: the thread the outcome goes in when not the request's own (a resolution posted on its own: the alert's).
    in_thread: str | None = None
    # Alerts: the alert (its key) the phones' action links act on, when checked just now; and what ends each phone's
    # text (E.164 → its action link). How it is sent, not what: a send rebuilt from its record is the same send.
    acts_on: str | None = field(default=None, compare=False)
    endings: Mapping[str, str] = field(default_factory=dict, compare=False)

    @cached_property
    def sms(self) -> SmsInfo | None:
        """The SMS encoding and segments (None for WhatsApp), as a phone gets it: with its action link, when it has
        one (every phone's is as long, and of the same characters)."""
        ending = next(iter(self.endings.values()), "")
        return analyze(self.text + ending) if self.via is Via.SMS and self.text else None

    @property
    def via(self) -> Via:
        return self.request.via

    @property
    def alert(self) -> AlertInfo | None:
        return self.request.alert

    @property
    def rule(self) -> str:
        return self.checked.rule

    @property
    def sender(self) -> str:
        return self.checked.sender

    @property
    def originator(self) -> str:
        return self.checked.originator

    @property
    def recipients(self) -> tuple[PhoneNumber, ...]:
        return self.checked.recipients

    @property
    def text(self) -> str:
        return self.checked.text

    @property
    def names(self) -> Mapping[str, str]:
        return self.checked.names

    @property
    def held(self) -> tuple[PhoneNumber, ...]:
        return self.checked.held

    @property
    def unreached(self) -> tuple[str, ...]:
        return self.checked.unreached

    @property
    def on_call(self) -> Mapping[str, str]:
        return self.checked.on_call


def prepared(
    send_id: str,
    request: SendRequest,
    checked: Checked,
    show_numbers: NumberDisplay,
    in_thread: str | None = None,
    acts_on: str | None = None,
) -> PreparedSend:
    """The one place a ``PreparedSend`` is made: at checking, and from a stored record after a restart."""
    return PreparedSend(send_id, request, checked, show_numbers, in_thread=in_thread, acts_on=acts_on)


@dataclass(frozen=True)
class SendRecord:
    """One intent as stored: the request, what checking it decided, how it ended and how far its story is told.

    Every change is a named transition below that returns the changed record; the store keeps the same change.
    """

    id: str
    request: SendRequest
    state: SendState
    created_at: datetime
    deadline_at: datetime
    attempts: int = 0  # D7 calls started, and failed attempts to tell the outcome
    claimed_by: str | None = None  # the outbox worker holding it
    checked: Checked | None = None
    refusal: Refusal | None = None
    duplicate_of: str | None = None  # deduplicated: the send that texted this alert
    placement: Placement = Placement()
    retry_noticed: bool = False  # "D7 unavailable, retrying" was said (once per send)
    outcome: Outcome | None = None  # once final: D7's verdict or the error
    last_error: D7Error | None = None  # the latest D7 error, also one that was retried
    finished_at: datetime | None = None
    posted_at: datetime | None = None  # the outcome was told in Slack
    result_ts: str | None = None  # the result message in the thread (updated in place with statuses)
    card_due_at: datetime | None = None  # statuses changed since the result message was last written
    reconciled_at: datetime | None = None  # last status look-up (or unknown-outcome note)
    acked_by: str | None = None  # alerts: the person who acknowledged it in Slack (no more pages for it)
    acked_at: datetime | None = None
    resolved_at: datetime | None = None  # alerts: when a resolving post ended it
    # The process that recorded it for a person, until it confirmed having told them "recorded": meanwhile only
    # that process may send it (another would not know whether its insert landed after the person was told "not
    # recorded").
    recorded_by: str | None = None

    # ------------------------------------------------------------ transitions

    def deny(self, refusal: Refusal, at: datetime) -> SendRecord:
        return replace(self, state=SendState.DENIED, refusal=refusal, finished_at=at)

    def deduplicate(self, first_id: str, at: datetime) -> SendRecord:
        return replace(self, state=SendState.DEDUPLICATED, duplicate_of=first_id, finished_at=at)

    def bundle(self, checked: Checked, at: datetime) -> SendRecord:
        return replace(self, state=SendState.BUNDLED, checked=checked, finished_at=at)

    def start(self, checked: Checked, placement: Placement) -> SendRecord:
        """pending → sending: D7 is about to be called; a crash from here on means "outcome unknown"."""
        return replace(
            self,
            state=SendState.SENDING,
            checked=checked,
            placement=placement,
            attempts=self.attempts + 1,
            recorded_by=None,  # its recorder is sending it: it told its sender "recorded"
        )

    def place(self, placement: Placement) -> SendRecord:
        """Announced after D7 was called (Slack was slow or down then): the story goes in this thread."""
        return replace(self, placement=placement)

    def notice_retry(self) -> SendRecord:
        return replace(self, retry_noticed=True)

    def defer(self, error: D7Error) -> SendRecord:
        """sending → pending: D7 provably did not send; tried again later (by any worker)."""
        return replace(self, state=SendState.PENDING, last_error=error, claimed_by=None)

    def finish(self, outcome: Outcome, at: datetime) -> SendRecord:
        error = outcome.error or self.last_error
        return replace(self, state=outcome.state, outcome=outcome, last_error=error, finished_at=at)

    def told(self, at: datetime, result_ts: str | None) -> SendRecord:
        return replace(self, posted_at=at, result_ts=result_ts, claimed_by=None)

    def later(self) -> SendRecord:
        """Not now: a step failed for a reason that may pass (Slack or the database); counted as an attempt."""
        return replace(self, attempts=self.attempts + 1, claimed_by=None)

    # The result message (its "card"): due when delivery statuses change, until it shows them. These need no lease
    # to be due (a report may come while any worker holds the send); shown or put off by the worker holding it.

    def card_due(self, at: datetime) -> SendRecord:
        """New delivery statuses since ``at``: the result message must show them (coalesced: ``card_due_at``)."""
        return replace(self, card_due_at=card_due_at(self.card_due_at, at, held=self.claimed_by is not None))

    def card_shown(self) -> SendRecord:
        """The result message shows the statuses (the store keeps it due if they changed again meanwhile)."""
        return replace(self, card_due_at=None)

    def card_later(self, until: datetime) -> SendRecord:
        """Slack did not take the new statuses: shown again at ``until``, by any worker."""
        return replace(self, card_due_at=until, claimed_by=None)

    # An alert's life after it was texted, by people and posts in Slack (no lease: the outbox may hold it).

    def acknowledge(self, user_id: str, at: datetime) -> SendRecord:
        """A person has the alert: no more pages for it (its escalation stops, its repeats are held). Kept only
        while ``acknowledgeable``: the first acknowledgement wins."""
        return replace(self, acked_by=user_id, acked_at=at)

    def resolve(self, at: datetime) -> SendRecord:
        """A resolving post ended the alert; kept only the first time (``resolved_at`` says when)."""
        return replace(self, resolved_at=at)

    # ------------------------------------------------------------ reading

    @property
    def acknowledgeable(self) -> bool:
        """A forwarded alert nobody acknowledged and no post resolved yet."""
        return self.request.origin.surface is Surface.ALERT and self.acked_at is None and self.resolved_at is None

    @property
    def alert(self) -> AlertInfo | None:
        return self.request.alert

    @property
    def rule(self) -> str | None:
        if self.checked is not None:
            return self.checked.rule
        return self.request.alert.rule if self.request.alert is not None and self.duplicate_of else None

    @property
    def sender(self) -> str | None:
        if self.checked is not None:
            return self.checked.sender
        return self.request.sender if self.duplicate_of else None

    @property
    def originator(self) -> str | None:
        return self.checked.originator if self.checked is not None else None

    @property
    def recipients(self) -> list[str] | None:
        """Every number checking found (E.164), those held back included."""
        if self.checked is None:
            return None
        return [n.e164 for n in (*self.checked.recipients, *self.checked.held)]

    @property
    def held(self) -> list[str]:
        return [n.e164 for n in self.checked.held] if self.checked is not None else []

    @property
    def names(self) -> Mapping[str, str]:
        return self.checked.names if self.checked is not None else {}

    @property
    def sms(self) -> SmsInfo | None:
        if self.checked is None or self.request.via is not Via.SMS:
            return None
        return analyze(self.checked.text)

    @property
    def encoding(self) -> str | None:
        return self.sms.encoding.value if self.sms is not None else None

    @property
    def segments(self) -> int | None:
        return self.sms.segments if self.sms is not None else None

    @property
    def refusal_kind(self) -> RefusalKind | None:
        return self.refusal.kind if self.refusal is not None else None

    @property
    def problems(self) -> list[str]:
        """Why it was refused; for an alert that went out, who it could not reach."""
        if self.refusal is not None:
            return list(self.refusal.problems)
        return list(self.checked.unreached) if self.checked is not None else []

    @property
    def thread_ts(self) -> str | None:
        return self.placement.thread_ts

    @property
    def unannounced(self) -> bool:
        """A person's checked send whose story has no thread yet (Slack did not take the announcement in time)."""
        return not self.request.origin.surface.is_alert and self.checked is not None and self.placement == Placement()

    @property
    def why_refused(self) -> Refusal:
        return self.refusal or Refusal(RefusalKind.INVALID, ())

    @property
    def request_id(self) -> str | None:
        return self.outcome.request_id if self.outcome is not None else None

    @property
    def text_as_sent(self) -> str:
        """The text as it went (or would go) to phones: an alert's rendered template, else the request's text."""
        return self.checked.text if self.checked is not None else self.request.text


def card_due_at(due: datetime | None, at: datetime, *, held: bool) -> datetime:
    """When a card with new statuses at ``at`` is rewritten, coalescing reports (``CARD_EVERY``): now when it was
    not due; as it was when due and no worker holds the send yet (that worker reads every status when it runs), or
    due within ``CARD_EVERY``; else ``CARD_EVERY`` from now: a worker is rewriting it now (the next rewrite waits),
    or a Slack failure's wait was longer (brought forward, not prolonged). The store keeps the same rule."""
    soon = at + CARD_EVERY
    if due is None:
        return at
    if (due <= at and not held) or at < due <= soon:
        return due
    return soon


@dataclass(frozen=True)
class NotSent:
    """Why an alert was not texted although nothing went wrong: a repeat, or every phone over its limit. ``reason``
    says which, in one word a thread's text is looked up by; left out, it follows from the rest."""

    state: SendState  # DEDUPLICATED | BUNDLED
    window: timedelta | None = None  # the dedupe window, or the per-phone limit's window
    first: SendRecord | None = None  # deduplicated: the send that texted the alert
    limit: int | None = None  # bundled: texts per phone per window
    quiet_until: datetime | None = None  # bundled in quiet hours: when they end (and the summaries go)
    reason: NotSentReason | None = None

    def __post_init__(self) -> None:
        if self.reason is None:
            object.__setattr__(self, "reason", self._implied())

    def _implied(self) -> NotSentReason:
        if self.state is SendState.DEDUPLICATED:
            first = self.first
            held = first is not None and first.acked_by is not None and first.resolved_at is None
            return NotSentReason.ACKNOWLEDGED if held else NotSentReason.REPEAT
        return NotSentReason.QUIET_HOURS if self.quiet_until is not None else NotSentReason.OVER_LIMIT


class NotSentReason(StrEnum):
    """Why an alert send texted nobody, on purpose."""

    REPEAT = "repeat"  # the same alert was texted within the rule's dedupe window
    ACKNOWLEDGED = "acknowledged"  # a person has the alert: its repeats wait until it is resolved
    RESOLUTION_TOLD = "resolution_told"  # RESOLVED was already texted for this alert
    STEP_ACKNOWLEDGED = "step_acknowledged"  # an escalation step: a person acknowledged the alert in time
    STEP_RESOLVED = "step_resolved"  # an escalation step: the alert was resolved in time
    QUIET_HOURS = "quiet_hours"  # held for the summary at the end of the rule's quiet hours
    OVER_LIMIT = "over_limit"  # every phone is over its per-phone limit: held for its summary
