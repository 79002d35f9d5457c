"""Values that cross layers: channels of delivery, send results and delivery status reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Via(StrEnum):
    """How a text travels to the phone."""

    SMS = "sms"
    WHATSAPP = "whatsapp"

    @property
    def label(self) -> str:
        """The name people read in Slack."""
        return "SMS" if self is Via.SMS else "WhatsApp"


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


@dataclass(frozen=True)
class RecipientRef:
    """One recipient as the requester named it."""

    kind: RefKind
    value: str  # the number as typed, U…, S…, or the contact group name
    label: str | None = None  # how Slack named it (``alice``, ``@oncall``)

    def __str__(self) -> str:
        if self.kind is RefKind.USER:
            return f"@{self.label}" if self.label else f"<@{self.value}>"
        if self.kind is RefKind.USERGROUP:
            return self.label or f"<!subteam^{self.value}>"
        if self.kind is RefKind.CONTACTS:
            return f"group:{self.value}"
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


@dataclass(frozen=True)
class Origin:
    """Where a request came from, and so where its story is told; stored with the intent."""

    surface: str  # command | shortcut | modal | alert | summary
    team_id: str
    user_id: str
    channel_id: str
    response_url: str | None = None  # commands and message shortcuts: ephemeral answers for 30 minutes
    thread_ts: str | None = None  # reply in this thread instead of posting a parent message


@dataclass(frozen=True)
class AlertInfo:
    """What makes a request an alert forward (``kind="alert"``) or a per-phone summary (``kind="summary"``)."""

    rule: str  # the alert rule's name
    kind: str = "alert"
    fingerprint: str | None = None  # alert: equal for repeats of the same alert
    message: dict[str, Any] | None = None  # alert: the Slack message as posted (text, attachments, blocks)
    phone: str | None = None  # summary: the phone (E.164) whose held alerts it sums up
    window_start: datetime | None = None  # summary: the per-phone window it closes

    @property
    def is_summary(self) -> bool:
        return self.kind == "summary"


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

    @property
    def user_id(self) -> str:
        return self.origin.user_id

    @property
    def channel_id(self) -> str:
        return self.origin.channel_id


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


@dataclass
class SendRecord:
    """One intent as stored: the request, what checking it decided, and how it ended."""

    id: str
    request: SendRequest
    state: SendState
    created_at: datetime
    attempts: int = 0
    deadline_at: datetime | None = None
    # after checking
    rule: str | None = None
    sender: str | None = None
    originator: str | None = None
    recipients: list[str] | None = None  # E.164
    names: dict[str, str] = field(default_factory=dict)
    encoding: str | None = None
    segments: int | None = None
    refusal_kind: str | None = None
    problems: list[str] = field(default_factory=list)
    # the story in Slack
    thread_ts: str | None = None  # the announcement (or the origin thread)
    private: bool = False  # told through the response_url only
    retry_notice_posted: bool = False
    posted_at: datetime | None = None
    # D7's answer
    request_id: str | None = None
    d7_created_at: datetime | None = None
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_kind: str | None = None  # the D7Error class name
    finished_at: datetime | None = None
    # alerts
    sent_text: str | None = None  # the text as rendered from the rule's template (None: ``request.text``)
    duplicate_of: str | None = None  # deduplicated: the send that texted this alert
    held: list[str] = field(default_factory=list)  # E.164 held back by a per-phone limit (in the summary)
    # delivery
    result_ts: str | None = None  # the result message in the thread (updated in place with statuses)
    card_due_at: datetime | None = None  # statuses changed since the result message was last written
    reconciled_at: datetime | None = None

    @property
    def text_as_sent(self) -> str:
        """The text as it went (or would go) to phones: an alert's rendered template, else the request's text."""
        return self.sent_text if self.sent_text is not None else self.request.text
