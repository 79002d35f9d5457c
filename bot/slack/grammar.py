"""The ``/sms`` and ``/whatsapp`` grammar: ``<recipients> <message>``, ``template:<alias> <recipients> | <value> |
<value>…`` (an approved WhatsApp template, its parameters in order), ``status <request_id>``, ``optout <number>``
and ``optin <number>`` (admins: the opt-out list), ``oncall [<schedule>]``, ``oncall take <schedule> [<duration>]``
and ``oncall give <schedule> @person [<duration>]`` (on call), ``help``, or nothing.

Recipients are the leading tokens, separated by spaces or commas: phone numbers (``+14155550100``, or local
numbers of at least 7 digits read in the policy's region), Slack users and user groups as Slack sends them with
escaping on (``<@U0123|alice>``, ``<!subteam^S0123|@oncall>``), ``group:NAME`` and ``schedule:NAME``. The message
is everything after the last recipient, exactly as typed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from bot.domain.errors import EmptyMessage, InputError
from bot.domain.models import RecipientRef, RefKind
from bot.domain.policy import parse_duration
from bot.domain.templates import TemplateUse
from bot.slack.markup import to_plain_text

_TOKEN = re.compile(r"[^\s,]+")
_USER = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|([^>]*))?>$")
_USERGROUP = re.compile(r"^<!subteam\^(S[A-Z0-9]+)(?:\|([^>]*))?>$")
_CONTACTS = re.compile(r"^group:([\w.\-]+)$")
_SCHEDULE = re.compile(r"^schedule:([\w.\-]+)$")
# "+", then digits and ( ) . - / with at least one digit; the first digit is the one required, so there is one way to
# read a token and a long one that fails (a typed "+111…1x") fails in linear time, not quadratic.
_INTERNATIONAL = re.compile(r"^\+[().\-/]*\d[\d().\-/]*$")
_LOCAL = re.compile(r"^\(?\d[\d().\-/]*$")
_MIN_LOCAL_DIGITS = 7
_TEMPLATE = re.compile(r"^template:(\S*)$", re.IGNORECASE)
_ALIAS = re.compile(r"^[A-Za-z0-9_.\-]{1,40}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
HELP_WORDS = frozenset({"help", "-h", "--help", "?"})


@dataclass(frozen=True)
class Help:
    """Show usage."""


@dataclass(frozen=True)
class Status:
    """Look up a send's delivery status at D7."""

    request_id: str


@dataclass(frozen=True)
class OptList:
    """An admin puts a number on the opt-out list (``out``) or takes it off; ``number`` as typed."""

    number: str
    out: bool

    @property
    def word(self) -> str:
        return "optout" if self.out else "optin"


OPT_WORDS = {"optout": True, "optin": False}

LONGEST_OVERRIDE = timedelta(weeks=4)  # longer than that is a new rotation, kept in the policy
ONCALL_USAGE = (
    "oncall lists every schedule; oncall <schedule> its next shifts; oncall take <schedule> [2h] puts you on call; "
    "oncall give <schedule> @person [2h] puts them on call (until the next handoff unless a time is given)"
)


@dataclass(frozen=True)
class OnCallAsk:
    """``/sms oncall``: every schedule (``schedule`` None), one schedule's next shifts, or a change: ``take`` (the
    person who typed it) or ``give`` (to ``person``), for ``duration`` (None: until the next handoff)."""

    schedule: str | None = None
    change: Literal["take", "give"] | None = None
    person: str | None = None  # give: the user ID
    duration: timedelta | None = None


def _oncall(words: list[str]) -> OnCallAsk:
    if not words:
        return OnCallAsk()
    action = words[0].lower()
    if action not in ("take", "give"):
        if len(words) != 1:
            raise InputError(ONCALL_USAGE)
        return OnCallAsk(words[0])
    rest = words[1:]
    person = None
    if action == "give":
        if len(rest) < 2 or not (m := _USER.match(rest[1])):
            raise InputError(ONCALL_USAGE)
        person, rest = m.group(1), [rest[0], *rest[2:]]
    if not 1 <= len(rest) <= 2:
        raise InputError(ONCALL_USAGE)
    try:
        duration = parse_duration(rest[1], weeks=True) if len(rest) == 2 else None
    except ValueError as exc:
        raise InputError(f"{exc}. {ONCALL_USAGE}") from None
    if duration is not None and duration > LONGEST_OVERRIDE:
        raise InputError(f"'{rest[1]}' is longer than an on-call change may last (4w); change the rotation instead")
    return OnCallAsk(rest[0], "take" if action == "take" else "give", person, duration)


@dataclass(frozen=True)
class Compose:
    """Send ``text`` to ``recipients``."""

    recipients: tuple[RecipientRef, ...]
    text: str  # plain text, Slack markup made readable (a template: its alias and values, for the record)
    template: TemplateUse | None = None


class NoRecipients(InputError):
    """The text does not start with a recipient."""

    def __init__(self) -> None:
        super().__init__(
            "start with who to text: a phone number (+14155550100), @person, @user-group, group:NAME or schedule:NAME"
        )


def _recipient(token: str) -> RecipientRef | None:
    if m := _USER.match(token):
        return RecipientRef(RefKind.USER, m.group(1), m.group(2) or None)
    if m := _USERGROUP.match(token):
        return RecipientRef(RefKind.USERGROUP, m.group(1), m.group(2) or None)
    if m := _CONTACTS.match(token):
        return RecipientRef(RefKind.CONTACTS, m.group(1))
    if m := _SCHEDULE.match(token):
        return RecipientRef(RefKind.SCHEDULE, m.group(1))
    if _INTERNATIONAL.match(token):
        return RecipientRef(RefKind.NUMBER, token)
    if _LOCAL.match(token) and sum(c.isdigit() for c in token) >= _MIN_LOCAL_DIGITS:
        return RecipientRef(RefKind.NUMBER, token)
    return None


def parse_command(text: str) -> Help | Compose | Status | OptList | OnCallAsk:
    """Parse a command's text; raises ``InputError`` naming what is missing."""
    stripped = text.strip()
    if not stripped or stripped.lower() in HELP_WORDS:
        return Help()
    words = stripped.split()
    if words[0].lower() in OPT_WORDS:
        number = to_plain_text(" ".join(words[1:])).strip()
        if not number or len(number) > 40:
            raise InputError(f"give one phone number: {words[0].lower()} +14155550100")
        return OptList(number, OPT_WORDS[words[0].lower()])
    if words[0].lower() == "oncall":
        return _oncall(words[1:])
    if words[0].lower() == "status":
        if len(words) != 2 or not _REQUEST_ID.match(words[1].strip("`")):
            raise InputError("give one request_id: status <request_id> (it is in the send's result message)")
        return Status(words[1].strip("`"))
    template: str | None = None
    if m := _TEMPLATE.match(words[0]):
        template = m.group(1)
        if not _ALIAS.match(template):
            raise InputError(
                "name the template after template: (for example template:shift_alert); /whatsapp help lists them"
            )
        text = text.strip()[len(words[0]) :]
    refs: list[RecipientRef] = []
    message_start = len(text)
    for match in _TOKEN.finditer(text):
        ref = _recipient(match.group(0))
        if ref is None:
            message_start = match.start()
            break
        refs.append(ref)
    if not refs:
        raise NoRecipients()
    message = to_plain_text(text[message_start:]).strip()
    if template is not None:
        values = tuple(v.strip() for v in message.removeprefix("|").split("|")) if message else ()
        use = TemplateUse(template, values)
        return Compose(tuple(dict.fromkeys(refs)), " | ".join((f"template:{template}", *values)), use)
    if not message:
        raise EmptyMessage()
    return Compose(tuple(dict.fromkeys(refs)), message)
