"""Verified phones (``defaults.verified_phones``), the pure part: a phone from a Slack profile is texted only once
its owner proved it is theirs with a code D7 Verify texted to it; what is kept per person, and the rules of trying.

A person's phone is verified while the number they last verified equals their profile phone now (a changed profile
phone needs verifying again). Three wrong codes in a row block sending and checking codes for 15 minutes. The code
itself is never known to the bot: D7 makes it, texts it and compares it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.domain.models import Via
from bot.domain.policy import Policy

MAX_WRONG_CODES = 3  # wrong codes in a row that block trying
BLOCK_FOR = timedelta(minutes=15)  # how long: sending a code and checking one are both refused meanwhile
CODE_LIFETIME = timedelta(minutes=10)  # D7's ``expiry`` for a code
# A click within this of the last code sent to the same phone shows that code's form again instead of texting a new
# one (a person who closed the form, or double-clicked, costs no second text; D7's own resend needs 60 s too).
NEW_CODE_AFTER = timedelta(seconds=60)
REMIND_EVERY = timedelta(hours=1)  # at most one private note per person this often, however many alerts skip them


@dataclass(frozen=True)
class Verification:
    """What is kept about one person's phone: the number they verified, the code being tried, the wrong tries."""

    user_id: str
    phone: str | None = None  # E.164 they verified last (None: never)
    verified_at: datetime | None = None
    otp_id: str | None = None  # D7's id of the code texted and not yet verified (None: none)
    otp_phone: str | None = None  # where that code went (E.164): what a right code verifies
    otp_sent_at: datetime | None = None
    otp_expires_at: datetime | None = None
    failures: int = 0  # wrong codes in a row since the last success or block
    blocked_until: datetime | None = None
    reminded_at: datetime | None = None  # the last private note about verifying

    def blocked(self, at: datetime) -> bool:
        return self.blocked_until is not None and self.blocked_until > at

    def code_open(self, at: datetime) -> bool:
        """A code was texted and may still be verified."""
        return self.otp_id is not None and self.otp_expires_at is not None and self.otp_expires_at > at

    def reusable_code(self, phone: str, at: datetime) -> bool:
        """The open code went to ``phone`` moments ago: show its form again rather than text another."""
        return (
            self.code_open(at)
            and self.otp_phone == phone
            and self.otp_sent_at is not None
            and at - self.otp_sent_at < NEW_CODE_AFTER
        )

    @property
    def tries_left(self) -> int:
        return max(0, MAX_WRONG_CODES - self.failures)


def minutes_until(until: datetime, at: datetime) -> int:
    """Whole minutes from ``at`` until ``until``, rounded up (at least 1): "try again in 15 minutes"."""
    return max(1, math.ceil((until - at).total_seconds() / 60))


def code_sender(policy: Policy) -> str | None:
    """The policy's sender whose originator codes are texted from: ``defaults.verify_sender``, else the first SMS
    sender (None: the policy has none)."""
    if policy.defaults.verify_sender is not None:
        return policy.defaults.verify_sender
    return next((name for name, sender in policy.senders.items() if sender.via is Via.SMS), None)
