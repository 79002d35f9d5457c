"""Action links: the short link at the end of an alert's text that lets the phone acknowledge it.

Each phone gets its own link (one D7 message object per phone, in one request), carrying an unguessable token
(96 bits, ``TOKEN_BYTES``) that stands for (the alert, the phone). The link is valid until the alert is resolved or
for ``VALID_FOR``, whichever ends first. Opening it (``GET``, as SMS apps and security scanners do by themselves)
changes nothing; the page's form (``POST``, with the link's own anti-forgery token) acknowledges the alert as the
phone, exactly like a ✅ reaction.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

TOKEN_BYTES = 12  # 96 bits, 16 characters of base64url: unguessable, and short in a 160-character text
TOKEN_CHARS = 16
VALID_FOR = timedelta(hours=24)
PATH = "/a/"  # PUBLIC_URL + PATH + token


def new_token() -> str:
    token = secrets.token_urlsafe(TOKEN_BYTES)
    assert len(token) == TOKEN_CHARS  # noqa: S101 - 12 bytes are 16 base64url characters, always
    return token


def is_token(text: str) -> bool:
    """Whether ``text`` has a token's shape (checked before the database is asked)."""
    return len(text) == TOKEN_CHARS and all(c.isascii() and (c.isalnum() or c in "-_") for c in text)


def link(base: str, token: str) -> str:
    """The link as the phone gets it: ``base`` is ``PUBLIC_URL`` without its trailing slash."""
    return f"{base}{PATH}{token}"


def suffix(base: str, token: str) -> str:
    """What ends a text that carries the link: a new line and the link."""
    return "\n" + link(base, token)


def room(base: str) -> str:
    """A stand-in for ``suffix`` of exactly its length and kind of characters, to fit the text before the tokens
    exist (base64url characters are all in GSM-7's basic set, as ``x`` is)."""
    return suffix(base, "x" * TOKEN_CHARS)


@dataclass(frozen=True)
class ActionLink:
    """One phone's link to one alert."""

    token: str
    send_id: str  # the send whose text carried it
    alert_key: str  # the alert it acts on (``keys.alert``): a summary's or an escalation step's is its alert's
    phone: str  # E.164
    form_token: str  # the page's form carries it back (anti-forgery)
    created_at: datetime
    expires_at: datetime

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def form_accepts(self, form_token: str) -> bool:
        return hmac.compare_digest(self.form_token.encode(), form_token.encode())
