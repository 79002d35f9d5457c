"""Values that cross layers: channels of delivery, send results and delivery status reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from bot.domain.templates import OutgoingTemplate, TemplateUse


class Via(StrEnum):
    """How a text travels to the phone."""

    SMS = "sms"
    WHATSAPP = "whatsapp"

    @property
    def label(self) -> str:
        """The name people read in Slack."""
        return "SMS" if self is Via.SMS else "WhatsApp"


@dataclass(frozen=True)
class OutgoingText:
    """One request to the message gateway: the same text to every recipient."""

    via: Via
    recipients: tuple[str, ...]  # E.164
    text: str
    originator: str | None = None  # the sender identity (WhatsApp: the registered number; required there)
    report_url: str | None = None  # where delivery reports go
    schedule_time: datetime | None = None
    cust_ref: str | None = None  # WhatsApp: our reference on every recipient (the send id)
    preview_url: bool = False  # WhatsApp: show a preview of the first link
    template: OutgoingTemplate | None = None  # WhatsApp: an approved template instead of free text (``text``: as shown)
    # What ends each recipient's text (E.164 → its action link): then one message object per recipient.
    suffixes: Mapping[str, str] = field(default_factory=dict)

    def batches(self, size: int | None) -> list[OutgoingText]:
        """The same text in requests of at most ``size`` recipients each, in order (None: all in one)."""
        if size is None or len(self.recipients) <= size:
            return [self]
        if size < 1:
            raise ValueError("a request takes at least one recipient")
        parts = []
        for start in range(0, len(self.recipients), size):
            chunk = self.recipients[start : start + size]
            endings = {r: self.suffixes[r] for r in chunk if r in self.suffixes} if self.suffixes else {}
            parts.append(replace(self, recipients=chunk, suffixes=endings))
        return parts


class SendStatus(StrEnum):
    """D7's verdict on a send request: ``rejected`` is a failure even though it came with a 200."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"


@dataclass(frozen=True)
class SendResult:
    """What D7 (or the dry-run provider) said about one send request."""

    request_id: str
    status: SendStatus
    created_at: datetime | None
    dry_run: bool = False

    @property
    def accepted(self) -> bool:
        return self.status is SendStatus.ACCEPTED


@dataclass(frozen=True)
class RecipientStatus:
    """One recipient's line in a status report."""

    recipient: str
    status: str
    msg_id: str | None = None
    reason: str | None = None
    parts: int | None = None
    cost: str | None = None
    country: str | None = None


@dataclass(frozen=True)
class StatusReport:
    """Per-recipient status of one request, from D7's status endpoints."""

    request_id: str
    via: Via
    recipients: list[RecipientStatus] = field(default_factory=list)
    stage: str | None = None


class RefKind(StrEnum):
    """What a recipient reference points at, before it is resolved to phone numbers."""

    NUMBER = "number"  # a phone number as typed
    USER = "user"  # a Slack user: the phone in their profile
    USERGROUP = "usergroup"  # a Slack user group: each member's profile phone
    CONTACTS = "contacts"  # a contact group of the policy (group:NAME)
    SCHEDULE = "schedule"  # whoever is on call for a schedule of the policy (schedule:NAME): their profile phone


@dataclass(frozen=True)
class RecipientRef:
    """One recipient as the requester named it."""

    kind: RefKind
    value: str  # the number as typed, U…, S…, or the contact group's or schedule's name
    label: str | None = None  # how Slack named it (``alice``, ``@oncall``)

    def __str__(self) -> str:
        if self.kind is RefKind.USER:
            return f"@{self.label}" if self.label else f"<@{self.value}>"
        if self.kind is RefKind.USERGROUP:
            return self.label or f"<!subteam^{self.value}>"
        if self.kind is RefKind.CONTACTS:
            return f"group:{self.value}"
        if self.kind is RefKind.SCHEDULE:
            return f"schedule:{self.value}"
        return self.value


@dataclass(frozen=True)
class Person:
    """What the directory knows about a Slack user."""

    user_id: str
    name: str
    phone: str | None = None
    tz: str | None = None
    is_bot: bool = False
    deleted: bool = False
    team_id: str | None = None  # the workspace the user belongs to (another one's, in a Slack Connect channel)
    enterprise_id: str | None = None  # their Enterprise Grid org, if any


@dataclass(frozen=True)
class Organisation:
    """The workspace (and Enterprise Grid org) the bot is installed in, as ``auth.test`` names it: its people may
    acknowledge alerts; people of another organisation in a Slack Connect channel may not."""

    team_id: str | None
    enterprise_id: str | None = None

    def includes(self, person: Person) -> bool:
        """Whether ``person`` is one of its people, as Slack's ``users.info`` says: in this workspace, or in this
        Grid org; never a bot or a deactivated account."""
        if person.is_bot or person.deleted:
            return False
        if self.enterprise_id is not None and person.enterprise_id == self.enterprise_id:
            return True
        return self.team_id is not None and person.team_id == self.team_id

    def outside(self, team_id: str) -> bool:
        """Whether a message's ``user_team`` shows without a look-up that its author is of another organisation
        (not decidable in a Grid org: each of its workspaces has a team ID of its own)."""
        return self.enterprise_id is None and self.team_id is not None and team_id != self.team_id


class Surface(StrEnum):
    """Where in Slack something started: the one set of values for requests, forms and stored intents."""

    COMMAND = "command"  # /sms or /whatsapp (with arguments, or opening the form)
    SHORTCUT = "shortcut"  # the global "Send a text" shortcut (opens the form)
    MESSAGE = "message"  # the "Text this message" message shortcut (opens the form)
    MODAL = "modal"  # the compose form, submitted
    ALERT = "alert"  # an alert a monitoring tool posted, forwarded by an alert rule
    SUMMARY = "summary"  # the end-of-window summary of alerts held back by a per-phone limit
    WORKFLOW = "workflow"  # the "Send a text with D7" step of a Workflow Builder workflow
    RESOLVED = "resolved"  # a post that resolves a forwarded alert: "RESOLVED" to the phones that got it
    ESCALATION = "escalation"  # an alert nobody acknowledged in time: the next step of its rule's escalation

    @property
    def is_alert(self) -> bool:
        """Alerts and summaries: nobody asked, so their whole story goes in the alert's thread."""
        return self in (Surface.ALERT, Surface.SUMMARY, Surface.RESOLVED, Surface.ESCALATION)


@dataclass(frozen=True)
class Origin:
    """Where a request came from, and so where its story is told; stored with the intent."""

    surface: Surface
    team_id: str
    user_id: str
    channel_id: str
    response_url: str | None = None  # commands and message shortcuts: ephemeral answers for 30 minutes
    thread_ts: str | None = None  # reply in this thread instead of posting a parent message


@dataclass(frozen=True)
class FiringAlert:
    """A monitoring tool's post that an alert rule took: texted to the rule's phones."""

    kind: ClassVar[Surface] = Surface.ALERT
    rule: str  # the alert rule's name
    fingerprint: str | None = None  # equal for repeats of the same alert
    message: dict[str, Any] | None = None  # the Slack message as posted (text, attachments, blocks)
    identity: str | None = None  # what it is about, firing/resolved words left out (its resolution finds it by it)


@dataclass(frozen=True)
class AlertSummary:
    """The end-of-window text for one phone: the alerts a per-phone limit or quiet hours held back."""

    kind: ClassVar[Surface] = Surface.SUMMARY
    rule: str
    phone: str | None = None  # the phone (E.164) whose held alerts it sums up
    window_start: datetime | None = None  # the window it closes


@dataclass(frozen=True)
class EscalationStep:
    """A step of an alert's escalation: texted when nobody acknowledged the alert in time."""

    kind: ClassVar[Surface] = Surface.ESCALATION
    rule: str
    escalates: str | None = None  # the idempotency key of the alert nobody acknowledged
    step: int | None = None  # which of the rule's steps (0-based)


@dataclass(frozen=True)
class AlertResolution:
    """A post that resolves an alert: "RESOLVED" to the phones the alert reached."""

    kind: ClassVar[Surface] = Surface.RESOLVED
    rule: str
    message: dict[str, Any] | None = None  # the resolving post as posted
    identity: str | None = None  # what it is about: the alert it ends when ``resolves`` does not name it
    resolves: str | None = None  # in a thread or by an edit: the idempotency key of the alert it ends
    # Every rule whose alerts it may end (each admits its author and its ``resolve`` matches; empty: ``rule`` alone,
    # as recorded before there was this field).
    rules: tuple[str, ...] = ()

    @property
    def ends(self) -> tuple[str, ...]:
        """Only these rules' alerts may it end."""
        return self.rules or (self.rule,)


# What an alert send is, its surface the tag (``kind``): nobody asked for it, so its story goes in the alert's thread.
AlertInfo = FiringAlert | AlertSummary | EscalationStep | AlertResolution


@dataclass(frozen=True)
class SendRequest:
    """A request to text phones, as a Slack surface built it; nothing resolved or checked yet."""

    via: Via
    origin: Origin
    recipients: tuple[RecipientRef, ...]
    text: str
    idempotency_key: str
    sender: str | None = None
    schedule_time: datetime | None = None
    alert: AlertInfo | None = None
    template: TemplateUse | None = None  # WhatsApp: an approved template and its values (``text``: as rendered)
    step: str | None = None  # a workflow step's function_execution_id: completed once D7 has answered
    workflow: str | None = None  # that step's workflow_execution_id: the run the channel is told sent it

    @property
    def user_id(self) -> str:
        return self.origin.user_id

    @property
    def channel_id(self) -> str:
        return self.origin.channel_id
