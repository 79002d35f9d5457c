"""Values that cross layers: channels of delivery, send results and delivery status reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


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
