"""What the sending core needs from the outside, as interfaces: each is implemented at the edge and wired by the
composition root.

- ``MessageGateway``: D7 (or its dry-run twin). ``Directory`` and ``MessageReader``: people, groups, channels and
  alert messages (Slack). ``Conversations``: where each request's story is told (Slack).
- ``SendQueue`` (the outbox), ``SendViews`` (the send log as people read it), ``AlertLog`` (alerts acknowledged and
  resolved), ``AlertLedger``, ``BudgetLedger``, ``DeliveryLog``, ``SettingsStore``, ``InboundLog`` (texts phones
  sent back) and ``OptOutList``: what is kept (SQL; in memory in tests). Their methods take and give domain
  values; every change of a send is a named transition of ``SendRecord``.
- ``OneTimeCodes`` (D7 Verify), ``PhoneVerifications`` (what is kept of it) and ``VerifyNotes`` (Slack): verified
  phones (``defaults.verified_phones``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot.domain.alerts import AlertActivity
from bot.domain.budgets import Charge, Overrun, Usage
from bot.domain.delivery import RecipientDelivery, StatusUpdate, StoredReport
from bot.domain.errors import D7Error
from bot.domain.inbound import InboundRecord, OptOut, Unanswered
from bot.domain.links import ActionLink
from bot.domain.models import Origin, OutgoingText, Person, SendRequest, SendResult, StatusReport, Surface, Via
from bot.domain.oncall import Handoff, Override, Shift
from bot.domain.sends import Checked, KeptAnswer, NotSent, Outcome, Placement, PreparedSend, Refusal, SendRecord
from bot.domain.verification import Verification

# Called before the client waits to retry: the error, the attempt that failed (1-based) and the delay.
RetryHook = Callable[[D7Error, int, float], Awaitable[None]]


@dataclass(frozen=True)
class Balance:
    """The D7 account's credit, as D7 last told it (``currency``: None when D7 does not say)."""

    amount: float
    currency: str | None = None


class NotNow(Exception):
    """Slack asked for patience (a channel's posts queued at its pace): try again after ``after`` seconds, not after
    the usual backoff."""

    def __init__(self, message: str, after: float) -> None:
        super().__init__(message)
        self.after = after


class MessageGateway(Protocol):
    """Sends texts and looks up their status; raises the ``D7Error`` tree on failure."""

    @property
    def dry_run(self) -> bool:
        """True when nothing really leaves the building."""
        ...

    async def send(self, text: OutgoingText, on_retry: RetryHook | None = None) -> SendResult:
        """Send ``text`` in one request; ``on_retry`` is called before each retry of a failure that sent nothing."""
        ...

    async def get_status(self, request_id: str, via: Via) -> StatusReport: ...

    async def balance(self) -> Balance | None:
        """The account's credit; None when D7 does not offer it (the endpoint is optional). Raises ``D7Error`` when
        D7 fails to answer, within a deadline of its own."""
        ...

    async def aclose(self) -> None: ...


class Directory(Protocol):
    """Who people are (Slack users and user groups) and where things are (channel names, message links)."""

    async def person(self, user_id: str) -> Person:
        """The user's name and profile phone; raises ``InputError`` for an unknown user."""
        ...

    async def group_members(self, group_id: str) -> list[str]:
        """User IDs in a user group (S…); raises ``InputError`` for an unknown group."""
        ...

    async def channel_name(self, channel_id: str) -> str:
        """The channel's name, without ``#``."""
        ...

    async def permalink(self, channel_id: str, ts: str) -> str:
        """A link to the message posted at ``ts`` in the channel."""
        ...

    async def is_member(self, channel_id: str, user_id: str) -> bool | None:
        """Whether the user is in the conversation; None when its members cannot be seen."""
        ...


class Report(Protocol):
    """One delivery report as D7 posted it (``key``: what makes two posts the same report)."""

    @property
    def key(self) -> str: ...

    @property
    def request_id(self) -> str: ...

    @property
    def recipient(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def reason(self) -> str | None: ...


# Reads a report's body; ``ValueError`` names what is wrong, without echoing the body.
ReportParser = Callable[[bytes], Report]


class MessageReader(Protocol):
    """Reads a stored chat message (an alert as posted) as plain text: (text, title)."""

    async def read(self, message: Mapping[str, Any]) -> tuple[str, str]: ...


class CannotTell(Exception):
    """The story cannot be told there, and trying again will not change it (a channel that is gone, a refused
    message): the teller logs it and gives up at once instead of trying for 24 hours."""


class Conversation(Protocol):
    """Where one request's story is told (for Slack: an ephemeral, a parent message and its thread). Each call
    raises ``CannotTell`` when nobody can be told, and any other exception when it may work later."""

    async def refuse(self, refusal: Refusal, careful: bool = False) -> None:
        """Say why nothing was sent; ``careful``: as for ``announce`` (in an alert's thread)."""
        ...

    async def not_sent(self, send: PreparedSend, placement: Placement, why: NotSent, careful: bool = False) -> None:
        """An alert not texted on purpose (a repeat, bundled); ``careful``: as for ``announce``."""
        ...

    async def announce(self, send: PreparedSend, careful: bool = False) -> Placement:
        """Post the send's announcement; ``careful``: an earlier try may have posted it (its answer lost, or the
        process stopped): look for it first, and post only when it is not there."""
        ...

    async def retrying(self, send: PreparedSend, placement: Placement, error: D7Error) -> None: ...

    async def finish(
        self,
        send: PreparedSend,
        placement: Placement,
        outcome: Outcome,
        statuses: Sequence[RecipientDelivery] = (),
        careful: bool = False,
    ) -> str | None:
        """Tell the outcome; the ts of the result message when it can be updated in place later. ``careful``: as
        for ``announce``."""
        ...

    async def update_card(
        self, send: PreparedSend, result_ts: str, outcome: Outcome, statuses: Sequence[RecipientDelivery]
    ) -> None: ...

    async def undelivered(
        self,
        send: PreparedSend,
        placement: Placement,
        failures: Sequence[RecipientDelivery],
        templates: Sequence[str] = (),
        careful: bool = False,
    ) -> None:
        """Some phones were not reached. ``templates``: free WhatsApp text failed because the 24-hour window was
        closed, and these approved templates of its sender may be sent instead. ``careful``: as for ``announce``."""
        ...

    async def still_unknown(self, send: PreparedSend, placement: Placement, created_at: datetime) -> None: ...

    async def acknowledged(self, user_id: str) -> None:
        """Say in the alert's thread (the conversation's) that this person has it."""

    async def acknowledged_by_phone(self, phone: str, name: str | None, careful: bool = False) -> None:
        """Say in the alert's thread that the phone (as the policy shows numbers; ``name``: whose Slack profile has
        it) acknowledged it from its text's link or by a reply; ``careful``: as for ``announce``."""

    async def resolved_by_phone(self, phone: str, name: str | None) -> None:
        """Say in the alert's thread that the phone resolved it from its text's link."""

    async def points_to(self, send: PreparedSend, thread_ts: str) -> None:
        """Say in the request's thread that this send's story is told in another thread of the channel (a resolution
        posted on its own: the alert it ends)."""


class PhoneNotes(Protocol):
    """Where what phones text back is told in Slack: in the thread of the send that texted them, or in a channel
    (``thread_ts`` None). ``phone``: as the policy shows numbers. Each raises ``CannotTell`` when it cannot be told
    there and never will, and any other exception when it may work later."""

    async def replied(self, channel_id: str, thread_ts: str | None, phone: str, text: str, inbound_id: str) -> str:
        """Post a phone's reply, made inert, with a way to answer it (``inbound_id`` names it); the post's ts."""
        ...

    async def keyword(self, channel_id: str, thread_ts: str | None, phone: str, word: str, said: Unanswered) -> str:
        """Say that the phone texted the keyword ``word`` and why the bot did not answer it; the post's ts."""
        ...

    async def unreadable(self, channel_id: str, why: str, keys: Sequence[str]) -> None:
        """Tell an admin that an inbound body could not be read, and its keys (never its values)."""
        ...


class Conversations(Protocol):
    """Opens the conversation of a stored origin (also after a restart)."""

    def open(self, origin: Origin, received_at: datetime | None = None) -> Conversation:
        """``received_at``: when the request came in (how old its ``response_url`` is)."""
        ...


class Steps(Protocol):
    """Workflow Builder steps (Slack's custom steps): each completed once, when its send's outcome is known."""

    async def complete(self, execution_id: str, outputs: Mapping[str, Any]) -> None:
        """The step succeeded with these outputs (one already completed, or gone, is left as it is)."""
        ...

    async def fail(self, execution_id: str, error: str) -> None:
        """The step failed, for this reason in plain words (one already completed, or gone, is left as it is)."""
        ...


class SendQueue(Protocol):
    """The outbox: intents recorded once, leased to one worker at a time, and moved on by ``SendRecord``'s named
    transitions. A transition takes the record as the worker holds it (``claimed_by``) and applies only while that
    worker still holds it; it returns the changed record, or raises ``LeaseLost`` when another worker holds it now
    (``start``: returns None). ``card_due`` is the one change made without the lease (a delivery report)."""

    async def record(
        self,
        request: SendRequest,
        deadline: timedelta,
        not_before: datetime | None = None,
        recorder: str | None = None,
    ) -> SendRecord | None:
        """Keep a new pending intent (before Slack is answered); None when its idempotency key was kept before.
        ``not_before``: due then (an end-of-window summary), its deadline counted from then. ``recorder``: the
        worker of the process answering its sender, the only one that may claim it until it is ``confirm``ed (or
        ``RECORDER_GONE`` after it was recorded: then to refuse it)."""
        ...

    async def confirm(self, record: SendRecord) -> None:
        """Its recorder told its sender "recorded": any worker may claim it now."""
        ...

    async def claim(self, worker_id: str, limit: int, lease: timedelta) -> list[SendRecord]:
        """Lease up to ``limit`` due intents to this worker, the longest due first; never one intent to two
        workers, nor one another recorder has not confirmed (until ``RECORDER_GONE``). Oldest first."""
        ...

    async def renew(self, worker_id: str, send_ids: Sequence[str], lease: timedelta) -> None:
        """Extend the leases this worker still holds."""
        ...

    async def release(self, record: SendRecord) -> None:
        """Let another worker (or this one, later) take it."""
        ...

    async def recover(self, *, everything: bool) -> int:
        """``sending`` intents of a dead process become ``unknown`` (never resent); how many.
        ``everything``: this is the only process, so every ``sending`` intent is orphaned."""
        ...

    async def claim_stale(self, limit: int, after: timedelta, again: timedelta) -> list[SendRecord]:
        """Sends due a status look-up (accepted, some recipient not final) or an unknown-outcome note, each marked
        looked-up in the same step so that replicas never take one twice."""
        ...

    async def backlog(self) -> int:
        """Intents not yet sent, plus outcomes not yet told."""
        ...

    async def stuck(self) -> int:
        """Intents left ``sending`` by a worker whose lease ran out (recovery has not settled them yet)."""
        ...

    async def oldest_due(self) -> datetime | None:
        """When the longest-waiting intent that is due and leased to no worker became due (None: none waits).
        The outbox claims due work within a second: one that waits minutes means sends are stuck."""
        ...

    async def deny(self, record: SendRecord, refusal: Refusal) -> SendRecord: ...

    async def deduplicate(self, record: SendRecord, first_id: str) -> SendRecord: ...

    async def bundle(self, record: SendRecord, checked: Checked) -> SendRecord: ...

    async def start(
        self, record: SendRecord, checked: Checked, placement: Placement, lease: timedelta
    ) -> SendRecord | None:
        """pending → sending, kept before D7 is called; None when this worker lost the intent."""
        ...

    async def place(self, record: SendRecord, placement: Placement) -> SendRecord: ...

    async def notice_retry(self, record: SendRecord) -> SendRecord: ...

    async def defer(self, record: SendRecord, until: datetime, error: D7Error) -> SendRecord: ...

    async def finish(self, record: SendRecord, outcome: Outcome) -> SendRecord: ...

    async def told(self, record: SendRecord, result_ts: str | None) -> SendRecord: ...

    async def later(self, record: SendRecord, until: datetime) -> SendRecord:
        """Try again at ``until`` (counted as an attempt; the lease is let go)."""
        ...

    async def card_due(self, record: SendRecord, *, final: bool) -> SendRecord:
        """The result message must show new statuses (``final``: every recipient's status is final); whoever holds
        the send."""
        ...

    async def card_shown(self, record: SendRecord, due_at: datetime) -> SendRecord:
        """The result message shows the statuses as of ``due_at``; the record as it stands then (a newer change
        keeps it due)."""
        ...

    async def card_later(self, record: SendRecord, until: datetime) -> SendRecord:
        """Show the statuses again at ``until`` (by any worker: the lease is let go)."""
        ...

    async def get(self, send_id: str) -> SendRecord | None: ...

    async def by_request_ids(self, request_ids: Sequence[str]) -> dict[str, SendRecord]:
        """The sends D7 gave these request ids (a delivery report names only that)."""
        ...


class SendViews(Protocol):
    """The send log as people read it: App Home and ``python -m bot audit``."""

    async def get(self, send_id: str) -> SendRecord | None: ...

    async def audit(self, since: datetime | None = None) -> list[SendRecord]:
        """Every send recorded since ``since`` (None: ever), oldest first."""
        ...

    async def recent_of(self, user_id: str, limit: int) -> list[SendRecord]:
        """The user's latest sends (not alerts), newest first."""
        ...

    async def counts_since(self, since: datetime) -> list[tuple[str, str, int]]:
        """(channel, state, sends) of sends and alerts (not summaries) recorded since ``since``, in no order."""
        ...

    async def needing_a_person(self, since: datetime, limit: int) -> list[SendRecord]:
        """The latest sends since ``since`` whose outcome is unknown, or that D7 rejected or failed; newest first."""
        ...

    async def alert_activity(self, since: datetime) -> list[AlertActivity]:
        """Per alert rule with alerts since ``since``: the last, and how many were texted, held, repeats, refused
        (in no order)."""
        ...


class AlertLog(Protocol):
    """Forwarded alerts as kept in the send log: found by key or identity, acknowledged once, resolved once.
    ``acknowledge`` and ``mark_resolved`` are ``SendRecord`` transitions that need no lease (a person in Slack, a
    resolving post): each applies only while its own condition holds."""

    async def by_key(self, idempotency_key: str) -> SendRecord | None:
        """The send recorded under this key (an alert: ``alert:<channel>:<ts>``)."""
        ...

    async def acknowledge(self, record: SendRecord, user_id: str) -> SendRecord | None:
        """This person has the alert: the alert acknowledged when this call did (the first acknowledgement of an
        alert not resolved yet), else None."""
        ...

    async def mark_resolved(self, record: SendRecord) -> SendRecord | None:
        """A resolving post ended this alert: the alert resolved when this call did (the first time), else None."""
        ...

    async def acked_repeat(self, rule: str, fingerprint: str, since: datetime) -> SendRecord | None:
        """The latest alert of ``rule`` with this fingerprint since ``since`` that a person acknowledged and that
        was not resolved: its repeats are not texted."""
        ...

    async def latest_alert(
        self, channel_id: str, identity: str, since: datetime, rules: Collection[str]
    ) -> SendRecord | None:
        """The latest alert (not a repeat) of one of ``rules`` with this identity posted in this channel since
        ``since``."""
        ...


class SendsToPhones(Protocol):
    """The send log read by phone: where a phone that writes back was texted from."""

    async def latest_to(
        self, phone: str, since: datetime, surfaces: Collection[Surface] | None = None
    ) -> SendRecord | None:
        """The latest send D7 accepted for this phone (E.164; one held back for it does not count) since ``since``,
        of these surfaces (None: any); the bot's own answers to phones are left out."""
        ...


class SendStore(SendQueue, SendViews, AlertLog, Protocol):
    """The send log as one object: the queue, its read models and the alert log (each store implements all three;
    each part of the core asks only for the one it uses)."""


class AlertLedger(Protocol):
    """Alert dedup and per-phone limits, shared by every replica."""

    async def lead(self, fingerprint: str, send_id: str, window: timedelta) -> str:
        """The send that texts this alert: ``send_id`` unless another with the same fingerprint did within
        ``window`` (then that one's id)."""
        ...

    async def release(self, fingerprint: str, send_id: str) -> None:
        """The leader's text did not go out: the next repeat may be texted."""
        ...

    async def take_quota(
        self, send_id: str, rule: str, phones: Sequence[str], count: int, per: timedelta
    ) -> dict[str, tuple[bool, datetime]]:
        """Count one text per phone against the rule's limit; per phone: (held back?, window start). Asked again
        for the same send, it answers what it answered (and counts only phones it was not asked about before)."""
        ...

    async def give_back(self, send_id: str) -> None:
        """The alert was refused before anything was sent: what it counted against per-phone limits is given back
        (in windows still open) and it is no longer held for any summary."""
        ...

    async def hold(self, send_id: str, rule: str, phones: Sequence[str], window_start: datetime) -> None:
        """Hold this alert back for these phones (quiet hours): it goes in their summary of the window that
        started at ``window_start``. Asked again for the same send, nothing changes."""
        ...

    async def held_windows(self, send_id: str) -> dict[str, datetime]:
        """For each phone this alert was held back for: the start of that window."""
        ...

    async def held_alerts(self, rule: str, phone: str, window_start: datetime) -> list[SendRecord]:
        """The alerts held back for ``phone`` in one window of ``rule``, oldest first."""
        ...


class BudgetLedger(Protocol):
    """Budgets' windows and what each send counted, shared by every replica."""

    async def charge(self, send_id: str, charges: Sequence[Charge], messages: int) -> Overrun | None:
        """Count ``messages`` against every budget in ``charges``, all or none, atomically (concurrent sends on
        any replica never overrun a budget together). A send counted before (asked again after a restart) is not
        counted again. Returns the first budget it would overrun (then nothing is counted), or None."""
        ...

    async def refund(self, send_id: str) -> None:
        """The send provably went nowhere: give its messages back to windows that are still open."""
        ...

    async def usage(self, keys: Sequence[str]) -> dict[str, Usage]:
        """What each budget's open window has counted (keys without an open window are left out)."""
        ...


class DeliveryLog(Protocol):
    """Delivery reports as received, and each recipient's latest status."""

    async def save_report(self, key: str, request_id: str, recipient: str, status: str, reason: str | None) -> bool:
        """Keep a report; False when this (message, status) was received before."""
        ...

    async def pending_reports(self, request_ids: Sequence[str] | None = None) -> list[StoredReport]: ...

    async def mark_applied(self, report_ids: Sequence[str]) -> None: ...

    async def apply_status(self, send_id: str, recipient: str, status: str, rank: int, reason: str | None) -> bool:
        """Keep a recipient's status unless one of the same or a higher rank is known; True if it changed."""
        ...

    async def apply_statuses(self, statuses: Sequence[StatusUpdate]) -> set[str]:
        """``apply_status`` for many at once (one transaction: a broadcast's reports are not a commit each); the
        ids of the sends where one changed."""
        ...

    async def statuses(self, send_id: str) -> list[RecipientDelivery]: ...

    async def mark_notified(self, send_id: str, recipients: Sequence[str]) -> None: ...

    async def failures_since(self, since: datetime, limit: int) -> list[tuple[str, RecipientDelivery, datetime]]:
        """(send_id, the recipient's status, when) of the latest recipients not reached since ``since``."""
        ...

    async def recent(self, recipients: Sequence[str], since: datetime) -> list[tuple[str, str, str | None, datetime]]:
        """(recipient, status, reason, when) of free-text WhatsApp sends to these numbers whose status changed since
        (a template delivered says nothing of the window)."""
        ...


class OptOutList(Protocol):
    """Phones that get no texts (but the one confirming their STOP), shared by every replica."""

    async def opted_out(self, phones: Sequence[str]) -> dict[str, OptOut]:
        """Those of these phones (E.164) on the list, with how they came to be."""
        ...

    async def opt_out(self, entry: OptOut) -> bool:
        """Put the phone on the list; False when it was on it already (then kept as it was)."""
        ...

    async def opt_in(self, phone: str) -> bool:
        """Take the phone off the list; False when it was not on it."""
        ...

    async def listing(self, limit: int) -> list[OptOut]:
        """The latest phones put on the list, newest first."""
        ...


class OnCallOverrides(Protocol):
    """Who took or was given a schedule's on-call from Slack, and when; shared by every replica and kept as history
    (an override replaced is cut short, not forgotten), so a moment in the past always has the same answer."""

    async def in_force(self, schedules: Sequence[str], at: datetime) -> dict[str, Override]:
        """The override in force at ``at`` for each of these schedules that has one."""
        ...

    async def replace(self, override: Override) -> None:
        """Keep ``override``: one of its schedule's still running when it starts ends then, and any starting from
        then on is dropped."""
        ...


class OnCallHandoffs(Protocol):
    """Each person's stint on a schedule, noticed once (the handoff DM, the user group set) by one replica."""

    async def claim(self, schedule: str, shift: Shift, at: datetime, lease: timedelta) -> Handoff | None:
        """The stint ``shift`` of ``schedule`` (kept at its first claim) for this worker until ``at + lease``; None
        when another worker holds it, or nothing of it is left to do."""
        ...

    async def keep(self, handoff: Handoff, retry_at: datetime | None) -> None:
        """What is done of it (``noticed``, ``group_set``, ``attempts``); what is left may be claimed again from
        ``retry_at`` (None: at once)."""
        ...


class InboundLog(Protocol):
    """Texts phones sent back: each kept as it came before it is answered, then handled once by one worker (a
    lease, like the outbox's), and kept with what was done."""

    async def receive(self, raw: bytes, digest: str, window: timedelta) -> InboundRecord | None:
        """Keep a body as it came, due to be handled now; None when the same body (``digest``) came within
        ``window``: then it is kept as a duplicate, already handled."""
        ...

    async def claim(self, limit: int, lease: timedelta) -> list[InboundRecord]:
        """Lease up to ``limit`` messages due to be handled, oldest first; never one to two workers at once."""
        ...

    async def keep(self, record: InboundRecord, due: datetime | None, *, working: bool = False) -> None:
        """Keep what is known of the message now (``InboundRecord``'s transitions); due again at ``due`` (None:
        handled), its lease let go unless the worker is still ``working`` on it."""
        ...

    async def get(self, inbound_id: str) -> InboundRecord | None: ...

    async def replies_to(self, send_ids: Sequence[str]) -> dict[str, list[InboundRecord]]:
        """The replies posted in each send's thread, newest first."""
        ...


class SettingsStore(Protocol):
    """Settings the bot keeps for itself (the same for every replica)."""

    async def get(self, key: str) -> str | None: ...

    async def put_once(self, key: str, value: str) -> str:
        """Keep ``value`` unless ``key`` has one; what is kept (the first writer wins)."""
        ...

    async def swap(self, key: str, old: str | None, new: str) -> bool:
        """Set ``key`` to ``new`` if it holds ``old`` (None: no value yet), atomically; whether it did (of replicas
        racing from the same ``old``, one wins)."""
        ...


class SendMetrics(Protocol):
    """What the sending core counts; ``bot.metrics.Metrics`` exports it to Prometheus (``GET /metrics``)."""

    def send_ended(self, via: str, outcome: str) -> None:
        """An intent ended: accepted, rejected, failed, unknown, denied, deduplicated, bundled…"""

    def d7_answered(self, via: str, seconds: float) -> None:
        """D7 answered a send (or failed to) after ``seconds``, retries inside the client included."""

    def d7_retried(self, via: str, reason: str) -> None:
        """A D7 call that provably did not send is tried again."""

    def d7_failed(self, via: str, error: str) -> None:
        """A send ended on a D7 error (``error`` its class name; a retryable one once its deadline passed)."""

    def count_billed(self, via: str, rule: str, channel: str, messages: int) -> None:
        """D7 accepted ``messages`` billed messages of a send allowed by ``rule`` from ``channel``."""

    def refused_over_budget(self, scope: str) -> None:
        """A send or alert was refused for a budget of this scope."""

    def backlog(self, depth: int) -> None:
        """Intents not yet sent, or whose outcome is not yet told."""

    def overdue(self, seconds: float) -> None:
        """How long the longest-waiting due intent has waited for a worker (0: none waits)."""

    def balance_read(self, amount: float | None, currency: str | None, at: float) -> None:
        """The D7 balance as read at ``at`` (Unix time); ``amount`` None: D7 does not offer it."""


class AnswerJournal(Protocol):
    """D7's answers kept on local disk (appended, fsynced) until the database has them: a process stopped while the
    database did not take an answer loses none; the next start writes them before anything is marked unknown."""

    def note(self, record: SendRecord, outcome: Outcome) -> None:
        """Written at once, before the database is asked, without waiting for the disk: kept across the process
        being killed (not across the machine stopping: that is ``keep``). Never raises."""
        ...

    async def keep(self, record: SendRecord, outcome: Outcome) -> None:
        """Kept across a crash once this returns (``OSError`` when the disk did not take it)."""
        ...

    def written(self, send_id: str) -> None:
        """The database has it (or will never take it from this process): no longer kept."""
        ...

    def kept(self) -> list[KeptAnswer]:
        """What the journal held when it was opened, oldest first: what the last process could not write."""
        ...


class Abandonments(Protocol):
    """Intents whose sender was told they were not recorded (their insert missed its deadline), or may have been (their
    recorder stopped before confirming): never sent."""

    def abandoned(self, record: SendRecord) -> str | None:
        """Why it must not be sent, in plain words; None when it may be."""
        ...


class RightOfWay(Protocol):
    """Slack's requests before background work: a step of the outbox waits here while a request waits."""

    async def give_way(self) -> None: ...


class BalanceView(Protocol):
    """The D7 balance as last read, for people who look (App Home): None when it never was."""

    def health(self) -> Mapping[str, Any] | None: ...


class ActionLinkStore(Protocol):
    """Each phone's link to an alert (``bot.domain.links``), kept so the phone can act on it later."""

    async def ensure(
        self, send_id: str, alert_key: str, phones: Sequence[str], at: datetime, expires_at: datetime
    ) -> dict[str, ActionLink]:
        """Each phone's link for this send (E.164 → link): made now where missing, kept where made before."""
        ...

    async def of_send(self, send_id: str) -> dict[str, ActionLink]:
        """The links a send's text carried (none: it carried none, or has not been sent)."""
        ...

    async def find(self, token: str) -> ActionLink | None: ...


class PhoneVerifications(Protocol):
    """Phones people verified with a code (``defaults.verified_phones``) and their verifying in progress (the code
    texted, wrong tries, a block), shared by every replica; ``bot.domain.verification`` has the rules."""

    async def verified(self, user_ids: Sequence[str]) -> dict[str, str]:
        """user_id → the E.164 number they verified last, for those of ``user_ids`` who verified one (it is their
        verified phone only while it equals their profile phone now)."""
        ...

    async def get(self, user_id: str) -> Verification | None: ...

    async def code_sent(self, user_id: str, phone: str, otp_id: str, at: datetime, expires_at: datetime) -> None:
        """A code went to ``phone``: the one to verify now (an earlier open one is forgotten)."""
        ...

    async def confirmed(self, user_id: str, otp_id: str, at: datetime) -> str | None:
        """D7 approved the code ``otp_id``: the phone it went to is the person's verified one now and the wrong
        tries are forgotten; that phone (E.164), or None when ``otp_id`` is no longer the open code (then nothing
        changes)."""
        ...

    async def wrong_code(self, user_id: str, otp_id: str, at: datetime) -> Verification:
        """D7 refused a code for ``otp_id`` (the open one): one more wrong try, counted atomically; the
        ``MAX_WRONG_CODES``-th in a row blocks trying until ``at + BLOCK_FOR`` and drops the code. What is kept now."""
        ...

    async def drop_code(self, user_id: str, otp_id: str) -> None:
        """The code ``otp_id`` can no longer be verified (expired, or unknown to D7)."""
        ...

    async def take_reminder(self, user_id: str, at: datetime, every: timedelta) -> bool:
        """Whether this person may be told now how to verify (nobody told them in the last ``every``); if so it is
        marked done, so that of replicas asking at once only one hears yes."""
        ...


class OneTimeCodes(Protocol):
    """D7 Verify: texts a code D7 makes to a phone, and says whether a code typed is that code."""

    async def send_code(self, phone: str, originator: str, content: str, expiry: int) -> str:
        """Text a code to ``phone`` (E.164) from ``originator``; ``content`` has ``{}`` where D7 puts the code, which
        expires after ``expiry`` seconds. D7's ``otp_id``; raises the ``D7Error`` tree."""
        ...

    async def check_code(self, otp_id: str, code: str) -> bool:
        """True: D7 approved ``code``; False: D7 refused it (wrong or expired). An ``otp_id`` D7 does not know
        raises ``D7NotFoundError``; other failures the ``D7Error`` tree."""
        ...


class VerifyNotes(Protocol):
    """Where a person is told privately that texts skip their unverified phone, and how to verify it."""

    async def how_to_verify(self, user_id: str) -> None: ...
