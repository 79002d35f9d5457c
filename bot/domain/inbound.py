"""Texts phones send back (D7's inbound callbacks), as values: the body read into a phone and a text, what the text
asks for, and who is on the opt-out list.

D7 publishes no field list for its inbound callbacks, so ``read_inbound`` tries the common names (and whatever the
policy's ``inbound.fields`` names instead); a body it cannot read is ``Unreadable`` with its keys (never their
values), so an admin can name the fields.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl

from bot.domain import patterns
from bot.domain.errors import InvalidPhoneNumber
from bot.domain.phone import PhoneNumber, parse_phone

# Whole-message keywords (trimmed, any case), as US carriers (CTIA) expect them honoured.
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
START_WORDS = frozenset({"START", "UNSTOP", "OPTIN"})
HELP_WORDS = frozenset({"HELP", "INFO"})
KEYWORDS = STOP_WORDS | START_WORDS | HELP_WORDS

# Where the phone and the text are looked for, in order, when the policy names no field.
PHONE_FIELDS = ("from", "sender", "msisdn", "originator")
TEXT_FIELDS = ("text", "message", "body", "content")
# A text given as an object ({"text": {"body": "hi"}}, WhatsApp's shape): the key that holds it.
TEXT_INSIDE = ("text", "body")

MAX_KEYS = 40  # keys named to an admin for one unreadable body
MAX_KEY_LENGTH = 60
MAX_DEPTH = 4  # nested objects read (and keys listed) this deep
MAX_TEXT = 4000  # characters of an inbound text kept and shown


class Asks(StrEnum):
    """What an inbound text asks the bot for."""

    STOP = "stop"  # opt the phone out (one confirmation text)
    START = "start"  # opt it back in (one confirmation text)
    HELP = "help"  # ``inbound.help_text``
    ACK = "ack"  # one of ``inbound.ack_words``: acknowledge the latest alert texted to it
    REPLY = "reply"  # anything else: a reply, posted where its phone was texted from


def asks(text: str, ack_words: frozenset[str] = frozenset({"ACK"})) -> Asks:
    """What ``text`` asks for: a keyword only as the whole message, trimmed, in any case."""
    word = text.strip().upper()
    if word in STOP_WORDS:
        return Asks.STOP
    if word in START_WORDS:
        return Asks.START
    if word in HELP_WORDS:
        return Asks.HELP
    if word and word in {w.upper() for w in ack_words}:
        return Asks.ACK
    return Asks.REPLY


@dataclass(frozen=True)
class Inbound:
    """A text a phone sent, as read from the callback's body."""

    phone: PhoneNumber
    text: str


@dataclass(frozen=True)
class Unreadable:
    """A body with no phone or no text where they were looked for; ``keys``: its keys as dotted paths (never its
    values), for the admin who sets ``inbound.fields``."""

    why: str
    keys: tuple[str, ...] = ()


def read_inbound(body: bytes, phone_field: str | None = None, text_field: str | None = None) -> Inbound | Unreadable:
    """The phone and the text of one callback body (JSON or form data, whatever its Content-Type says).

    ``phone_field`` and ``text_field``: dotted paths the policy names (``inbound.fields``); when left out, the first
    of ``PHONE_FIELDS`` and ``TEXT_FIELDS`` present, at the top or inside a ``data`` object. A text may be an object
    holding ``text`` or ``body``."""
    data = _decoded(body)
    if isinstance(data, Unreadable):
        return data
    keys = tuple(_keys(data))
    raw_phone = _found(data, phone_field, PHONE_FIELDS)
    if raw_phone is None:
        return Unreadable(f"no phone number in {_where(phone_field, PHONE_FIELDS)}", keys)
    phone = _phone(raw_phone)
    if phone is None:
        return Unreadable(f"the phone number in {_where(phone_field, PHONE_FIELDS)} is not one", keys)
    text = _text(_found(data, text_field, TEXT_FIELDS))
    if text is None:
        return Unreadable(f"no text in {_where(text_field, TEXT_FIELDS)}", keys)
    # NUL and a lone surrogate (an emoji cut in half: JSON can carry "\ud83d", no database can keep it) become
    # nothing and U+FFFD: a text that cannot be kept would be claimed again and again.
    return Inbound(phone, patterns.readable(text.replace("\x00", "")[:MAX_TEXT]))


def _decoded(body: bytes) -> Mapping[str, Any] | Unreadable:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Unreadable("the body is not UTF-8")
    data: Any
    if text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError:
            return Unreadable("the body is not valid JSON")
        except RecursionError:  # nested deeper than Python's parser goes: nobody's callback
            return Unreadable("the body is JSON nested too deep")
        if isinstance(data, list) and len(data) == 1:  # one message in a list
            data = data[0]
    else:
        data = dict(parse_qsl(text, keep_blank_values=False))
    if not isinstance(data, dict) or not data:
        return Unreadable("the body is not an object with fields", tuple(_keys(data)) if isinstance(data, dict) else ())
    return data


def _where(field: str | None, defaults: tuple[str, ...]) -> str:
    return f"`{field}`" if field is not None else ", ".join(f"`{f}`" for f in defaults)


def _at(data: Mapping[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _found(data: Mapping[str, Any], field: str | None, defaults: tuple[str, ...]) -> Any:
    """The value at ``field``, else at the first default name present (at the top, then inside ``data``)."""
    if field is not None:
        return _at(data, field)
    for scope in (data, data.get("data")):
        if isinstance(scope, Mapping):
            for name in defaults:
                if scope.get(name) not in (None, ""):
                    return scope[name]
    return None


def _phone(value: Any) -> PhoneNumber | None:
    """D7 writes numbers as ``+9715…`` or ``9715…`` (international, without the plus)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    raw = str(value).strip()
    digits = "".join(c for c in raw if c.isdigit())
    if not digits or len(digits) > 15 or any(not (c.isdigit() or c in "+ -().") for c in raw):
        return None
    try:
        return parse_phone("+" + digits.removeprefix("00"))
    except InvalidPhoneNumber:
        return None


def _text(value: Any, depth: int = 0) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and depth < MAX_DEPTH:
        for name in TEXT_INSIDE:
            found = _text(value.get(name), depth + 1)
            if found is not None:
                return found
    return None


def _keys(data: Mapping[str, Any], prefix: str = "", depth: int = 0) -> Iterator[str]:
    """The body's keys as dotted paths (``data.from``), sorted, at most ``MAX_KEYS``; never a value."""
    found: list[str] = []
    for key in sorted(str(k) for k in data):
        path = f"{prefix}{key[:MAX_KEY_LENGTH]}"
        found.append(path)
        inner = data.get(key)
        if isinstance(inner, Mapping) and depth + 1 < MAX_DEPTH:
            found += _keys(inner, path + ".", depth + 1)
    yield from found[:MAX_KEYS]


class Outcome(StrEnum):
    """What was done with an inbound message (kept with it)."""

    PENDING = "pending"  # kept, not handled yet
    UNREADABLE = "unreadable"  # no phone or no text found: an admin was told its keys (once)
    DUPLICATE = "duplicate"  # the same body again within minutes: dropped
    OPTED_OUT = "opted_out"  # STOP & co.: opted out, one confirmation text
    OPTED_IN = "opted_in"  # START & co.: opted back in, one confirmation text
    HELPED = "helped"  # HELP, INFO: ``inbound.help_text`` texted
    UNCHANGED = "unchanged"  # a keyword that changed nothing and is not answered (``Unanswered`` says why)
    ACKNOWLEDGED = "acknowledged"  # an ack word: the latest alert texted to the phone acknowledged
    REPLIED = "replied"  # posted in the thread of the latest send to the phone
    INBOX = "inbox"  # posted in ``inbound.channel`` (no recent send to the phone)
    KEPT = "kept"  # nowhere to post it (no channel set): kept only


@dataclass(frozen=True)
class InboundRecord:
    """One inbound message as kept: the body as it came, and (once handled) what it said and what was done."""

    id: str
    received_at: datetime
    raw: bytes
    outcome: Outcome = Outcome.PENDING
    phone: str | None = None  # E.164
    text: str | None = None
    send_id: str | None = None  # the send it answers (its thread has it), when there is one
    note_ts: str | None = None  # the bot's message about it in Slack
    attempts: int = 0  # tries that failed for a reason that may pass (Slack, the database)

    def read(self, phone: str | None, text: str | None) -> InboundRecord:
        """What the body says: the phone and the text (None: not found)."""
        return replace(self, phone=phone, text=text)

    def did(self, outcome: Outcome, send_id: str | None = None) -> InboundRecord:
        """What was done about it (``send_id``: the send whose thread it went in)."""
        return replace(self, outcome=outcome, send_id=send_id)

    def noted(self, ts: str | None) -> InboundRecord:
        """The bot's message about it was posted in Slack (None: there was nowhere to post it)."""
        return replace(self, note_ts=ts)

    def tried(self) -> InboundRecord:
        """A try failed for a reason that may pass: tried again later."""
        return replace(self, attempts=self.attempts + 1)


class Unanswered(StrEnum):
    """Why the bot did not text a keyword's answer (its thread says so instead)."""

    ALREADY_OUT = "already_out"  # STOP from a phone already opted out: it had its one confirmation
    NOT_OUT = "not_out"  # START from a phone that was not opted out: nothing changed
    OPTED_OUT = "opted_out"  # HELP from an opted-out phone: it gets no texts
    NO_SENDER = "no_sender"  # no sender to answer with (the list changed all the same)


class OptOutWay(StrEnum):
    """How a phone came to be on the opt-out list."""

    TEXT = "text"  # the phone texted STOP (or another stop word)
    ADMIN = "admin"  # an admin typed ``/sms optout``


@dataclass(frozen=True)
class OptOut:
    """A phone that gets no texts (but the one confirming its STOP)."""

    phone: str  # E.164
    at: datetime
    way: OptOutWay
    by: str | None = None  # the admin's user ID (``ADMIN``), or the stop word texted (``TEXT``)
