"""Delivery status of one recipient: D7's words mapped to a few states that only move forward.

D7 reports SMS as ``scheduled``, ``sent``, ``delivered``, ``un_delivered`` (also seen as ``undelivered``) and
WhatsApp as ``sent``, ``delivered``, ``read``, ``failed``. Reports come more than once and out of order, so each
state has a rank and a report only counts when it ranks higher than what is known: a late ``sent`` after
``delivered`` is ignored. A status the bot does not know is kept (shown as D7 wrote it) but is never final.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Delivery(StrEnum):
    SCHEDULED = "scheduled"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    READ = "read"
    OTHER = "other"  # a status the bot does not know

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def final(self) -> bool:
        return self in (Delivery.DELIVERED, Delivery.UNDELIVERED, Delivery.FAILED, Delivery.READ)

    @property
    def failed(self) -> bool:
        return self in (Delivery.UNDELIVERED, Delivery.FAILED)


_RANK = {
    Delivery.OTHER: 0,
    Delivery.SCHEDULED: 1,
    Delivery.SENT: 2,
    Delivery.DELIVERED: 3,
    Delivery.UNDELIVERED: 3,
    Delivery.FAILED: 3,
    Delivery.READ: 4,
}

_ALIASES = {
    "scheduled": Delivery.SCHEDULED,
    "accepted": Delivery.SENT,  # queued at D7; as far as the phone is concerned, on its way
    "sent": Delivery.SENT,
    "submitted": Delivery.SENT,
    "delivered": Delivery.DELIVERED,
    "read": Delivery.READ,
    "seen": Delivery.READ,
    "undelivered": Delivery.UNDELIVERED,
    "un_delivered": Delivery.UNDELIVERED,
    "undeliverable": Delivery.UNDELIVERED,
    "rejected": Delivery.FAILED,
    "failed": Delivery.FAILED,
    "expired": Delivery.UNDELIVERED,
}


def delivery_of(raw: str) -> Delivery:
    """D7's status word as a ``Delivery`` (``OTHER`` when unknown)."""
    return _ALIASES.get(re.sub(r"[\s-]+", "_", raw.strip().lower()), Delivery.OTHER)


def e164_of(raw: str) -> str:
    """A recipient as D7 writes it (``+9715…`` or ``9715…``) in E.164, to match what the bot sent."""
    digits = re.sub(r"\D", "", raw)
    return f"+{digits}" if digits else raw.strip()


@dataclass(frozen=True)
class RecipientDelivery:
    """What is known of one recipient's delivery."""

    recipient: str  # E.164
    status: str  # D7's word, as reported
    reason: str | None = None
    notified: bool = False  # a failure was told in the thread

    @property
    def delivery(self) -> Delivery:
        return delivery_of(self.status)


@dataclass(frozen=True)
class StoredReport:
    """A delivery report as kept until its send is known and it is applied."""

    id: str
    request_id: str
    recipient: str  # E.164
    status: str
    reason: str | None = None


@dataclass(frozen=True)
class StatusUpdate:
    """One recipient's status to keep (unless as far or further is known)."""

    send_id: str
    recipient: str  # E.164
    status: str
    rank: int
    reason: str | None = None


def failed_words() -> frozenset[str]:
    """D7's status words (lower case, with ``_``, ``-`` or a space between words) that mean not reached."""
    words = [k for k, v in _ALIASES.items() if v.failed]
    return frozenset(w.replace("_", sep) for w in words for sep in ("_", "-", " "))
