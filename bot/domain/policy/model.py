"""The policy file's model: the pydantic classes ``policy.yml`` is read into, and the constants its values use."""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from bot.domain import patterns
from bot.domain.inbound import KEYWORDS as INBOUND_KEYWORDS
from bot.domain.models import Via
from bot.domain.oncall import START_FORMAT, Rotation
from bot.domain.phone import SAFE_NUMBER_TYPES, NumberDisplay, NumberType, PhoneNumber, is_region
from bot.domain.slack_ids import CHANNEL_ID, USERGROUP_ID
from bot.domain.templates import Template

WILDCARD = "*"
GROUP_PREFIX = "group:"
SCHEDULE_PREFIX = "schedule:"
REGION_PREFIX = "region:"
TEMPLATE_FIELDS = frozenset({"text", "title", "channel", "link"})

_ALIAS = re.compile(r"^[A-Za-z0-9_.\-]{1,40}$")
_DURATION = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$")  # at most 999999 of a unit: no overflow
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]


def parse_duration(text: str, *, weeks: bool = False) -> timedelta:
    """``30s``, ``10m``, ``1h``, ``2d`` (and ``1w`` with ``weeks``) → timedelta; anything else raises ``ValueError``."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0 or (match.group(2) == "w" and not weeks):
        like = "30s, 10m, 1h, 2d or 1w" if weeks else "30s, 10m, 1h or 2d"
        raise ValueError(f"'{text}' is not a duration like {like}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


def _shift_length(value: Any) -> Any:
    return parse_duration(value, weeks=True) if isinstance(value, str) else value


def _positive(value: timedelta) -> timedelta:
    # 0 or less never holds: a dedupe window, a per-phone limit or an escalation step of 0 does nothing.
    if value <= timedelta(0):
        raise ValueError(f"'{value.total_seconds():g}' seconds is not a duration: use one like 30s, 10m, 1h or 2d")
    return value


# ``30s``, ``10m``, ``1h``, ``2d`` in the file; a timedelta once read, longer than nothing.
Duration = Annotated[timedelta, BeforeValidator(_duration), AfterValidator(_positive)]
# A schedule's shift: weeks too (``1w``).
ShiftLength = Annotated[timedelta, BeforeValidator(_shift_length), AfterValidator(_positive)]


def _regex(value: str) -> str:
    patterns.compile(value)  # a PatternError (a ValueError) says why RE2 cannot run it
    if patterns.nested_repetition(value):
        raise ValueError(
            "a repeat inside a repeat (like `(\\w+\\s?)+`) can take seconds on a short text in backtracking regex "
            "engines; write it with one repeat (like `[\\w\\s]+`)"
        )
    return value


# A regular expression, compiled by RE2 when the policy is read (once: ``patterns.compile`` keeps it), so that it
# runs in time linear in the text it reads; a pattern RE2 cannot compile is a problem of the file.
Regex = Annotated[str, AfterValidator(_regex)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


MIN_BUDGET_WINDOW = timedelta(minutes=1)


def _window(value: timedelta) -> timedelta:
    # A window of a few milliseconds (or none) never holds: every send finds it empty.
    if value < MIN_BUDGET_WINDOW:
        raise ValueError(f"a window must be at least 1 minute (like 1h or 1d), not {value.total_seconds():g} s")
    return value


# A budget's or a per-phone limit's window: a duration of a minute or more.
Window = Annotated[Duration, AfterValidator(_window)]


class Budget(_Model):
    """At most ``messages`` billed messages (recipients x SMS segments; one per WhatsApp recipient) per ``per``."""

    messages: int = Field(ge=1)
    per: Window


# When ``defaults.limits`` sets no ``per_user``: one person cannot empty the D7 account in a burst (``none``: off).
DEFAULT_PER_USER = Budget(messages=100, per=timedelta(hours=1))
NO_BUDGET = "none"


class RuleLimits(_Model):
    """A rule's budgets: each person, and each channel, counted over the sends this rule allows."""

    per_user: Budget | None = None
    per_channel: Budget | None = None


class WorkspaceLimits(_Model):
    """``defaults.limits``: each person and each channel over every rule, and the whole workspace (alerts too).

    ``per_user`` left out is ``DEFAULT_PER_USER``; ``none`` turns it off."""

    per_user: Budget | Literal["none"] | None = None
    per_channel: Budget | None = None
    workspace: Budget | None = None

    @property
    def user_budget(self) -> Budget | None:
        """Each person's workspace-wide budget in force."""
        if self.per_user is None:
            return DEFAULT_PER_USER
        return None if self.per_user == NO_BUDGET else self.per_user  # type: ignore[return-value]


class AlertLimits(_Model):
    """An alert rule's budget: every text it sends, to every phone, counted together."""

    per_rule: Budget | None = None


class Defaults(_Model):
    """Values that apply wherever a rule says nothing."""

    region: str = "US"
    max_segments: int = Field(10, ge=1, le=50)
    show_numbers: NumberDisplay = NumberDisplay.MASKED
    # A user group with more members is refused before any member's profile is read: 400 profiles cost 400
    # users.info calls, which Slack's rate limits take from everyone's sends.
    max_group_size: int = Field(50, ge=1)
    # Recipients per send where a rule sets no max_recipients: a rule without one used to be unbounded (a 400-member
    # group in one send).
    max_recipients: int = Field(10, ge=1)
    admin_channel: str | None = None  # where operators hear about the D7 account (e.g. a low balance)
    low_balance: float | None = Field(None, ge=0)  # warn in admin_channel when the D7 balance falls below this
    limits: WorkspaceLimits = WorkspaceLimits()
    # Where texts may go at all (ISO regions, as libphonenumber assigns numbers: +1 876 is JM, +1 787 is PR);
    # None: the country of ``region`` alone. A prefix like "+1*" spans 25 countries, so rules alone are not enough.
    countries: list[str] | None = None
    # Phones from Slack profiles (people, user groups' members, whoever is on call) are texted only once their owner
    # verified them (App Home, D7 Verify): a typo in a profile must not page a stranger.
    verified_phones: bool = False
    # The SMS sender whose originator texts the codes (default: the first SMS sender of ``senders``).
    verify_sender: str | None = None

    @field_validator("countries")
    @classmethod
    def _known_countries(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("name at least one country (like [US, CA]), or leave countries out")
        codes = [str(code).strip().upper() for code in value]
        if unknown := [c for c in codes if not is_region(c)]:
            raise ValueError(f"unknown country '{unknown[0]}' (use two-letter codes such as US or GB)")
        return list(dict.fromkeys(codes))

    @property
    def allowed_countries(self) -> tuple[str, ...]:
        """The regions texts may go to."""
        return tuple(self.countries) if self.countries is not None else (self.region,)

    @field_validator("admin_channel")
    @classmethod
    def _admin_channel(cls, value: str | None) -> str | None:
        if value is not None and not CHANNEL_ID.match(value):
            raise ValueError(f"'{value}' is not a channel ID (C…/G…)")
        return value

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        if not is_region(value.upper()):
            raise ValueError(f"unknown region '{value}' (use a two-letter code such as US or GB)")
        return value.upper()


class Sender(_Model):
    """A sender identity owned by the D7 account; a WhatsApp sender lists the approved templates it may use."""

    via: Via
    originator: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    templates: dict[str, Template] = Field(default_factory=dict)

    @field_validator("templates")
    @classmethod
    def _aliases(cls, value: dict[str, Template]) -> dict[str, Template]:
        for alias in value:
            if not _ALIAS.match(alias):
                raise ValueError(f"'{alias}' is not a template alias (letters, digits, _ . -; up to 40)")
        return value


class PolicySurface(StrEnum):
    """How a person starts a send, as a rule's ``surfaces`` names it."""

    COMMANDS = "commands"  # /sms or /whatsapp with the message typed after it
    FORMS = "forms"  # the compose form: /sms alone, the "Send a text" shortcut, "Text this message"
    WORKFLOWS = "workflows"  # the "Send a text with D7" step: it runs without the person watching, so opt-in

    @property
    def label(self) -> str:
        return {"commands": "slash commands", "forms": "the compose form", "workflows": "workflow steps"}[self.value]


DEFAULT_SURFACES = (PolicySurface.COMMANDS, PolicySurface.FORMS)


class Rule(_Model):
    """Who may send what, from where."""

    name: Name
    slack_channels: list[str] = Field(min_length=1)
    users: list[str] = Field(min_length=1)
    senders: list[str] = Field(min_length=1)
    recipients: list[str] = Field(min_length=1)
    max_recipients: int | None = Field(None, ge=1)
    # Number types beyond SAFE_NUMBER_TYPES this rule may text (premium_rate, shared_cost, uan, ...).
    allow_number_types: list[NumberType] = Field(default_factory=list)
    limits: RuleLimits = RuleLimits()
    templates: list[str] | None = None  # WhatsApp templates this rule allows (None: all of its senders')
    # Where its sends may start. A workflow's author chooses what its step sends and to whom, and anyone who runs
    # the workflow sends it: an admin opts workflows in, rule by rule.
    surfaces: list[PolicySurface] = Field(default_factory=lambda: list(DEFAULT_SURFACES), min_length=1)

    def allows_type(self, number_type: NumberType) -> bool:
        return number_type in SAFE_NUMBER_TYPES or number_type in self.allow_number_types


class PerPhoneLimit(_Model):
    """At most ``count`` texts to one phone per ``per``."""

    count: int = Field(ge=1)
    per: Window


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone '{value}' (use names like Europe/London)") from None
    return value


_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class QuietHours(_Model):
    """Between ``from`` and ``to`` (local time in ``tz``; across midnight when ``from`` is later), alerts are held and
    summed up at the end of the quiet time, one text per phone; alerts matching ``except`` are texted at once."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    tz: str = "UTC"
    except_: Regex | None = Field(None, alias="except")

    @field_validator("from_", "to")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError(f"'{value}' is not a time like 22:00")
        return value

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _time_zone(value)

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.from_ == self.to:
            raise ValueError("from and to are the same time: no quiet time at all (remove quiet_hours)")
        return self

    def window(self, at: datetime) -> tuple[datetime, datetime] | None:
        """The quiet time ``at`` falls in (its start and end, in UTC), or None when ``at`` is not in one."""
        zone = ZoneInfo(self.tz)
        local = at.astimezone(zone)
        start_t, end_t = (time(int(v[:2]), int(v[3:])) for v in (self.from_, self.to))
        day = local.date()
        if start_t == end_t:
            return None
        if start_t < end_t:  # within one day
            if not start_t <= local.time() < end_t:
                return None
            start, end = datetime.combine(day, start_t, zone), datetime.combine(day, end_t, zone)
        elif local.time() >= start_t:  # across midnight, before it
            start, end = datetime.combine(day, start_t, zone), datetime.combine(day + timedelta(days=1), end_t, zone)
        elif local.time() < end_t:  # across midnight, after it
            start, end = datetime.combine(day - timedelta(days=1), start_t, zone), datetime.combine(day, end_t, zone)
        else:
            return None
        return start.astimezone(UTC), end.astimezone(UTC)

    def critical(self, text: str) -> bool:
        return self.except_ is not None and patterns.compile(self.except_).search(text) is not None


class EscalationStep(_Model):
    """If nobody acknowledged the alert ``after`` it was texted, text these too."""

    after: Duration
    to: list[str] = Field(min_length=1)


ACK_WAYS = ("reactions", "replies")


def _ack_way(value: str) -> str:
    if value not in ACK_WAYS:
        raise ValueError(f"unknown way to acknowledge '{value}': use {' or '.join(ACK_WAYS)}")
    return value


# How people acknowledge an alert in Slack (``ack_by``), checked when the policy is read.
AckWay = Annotated[str, AfterValidator(_ack_way)]


class AlertRule(_Model):
    """Messages posted in these channels that match are forwarded to phones."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Name
    slack_channels: list[str] = Field(min_length=1)
    match: Regex
    from_: Literal["bots", "any"] | list[str] = Field("bots", alias="from")
    sender: str
    to: list[str] = Field(min_length=1)
    template: str = "{text}"
    max_segments: int = Field(1, ge=1, le=50)
    dedupe_window: Duration = timedelta(minutes=10)
    max_per_phone: PerPhoneLimit | None = None
    limits: AlertLimits = AlertLimits()  # over it, an alert is not texted and its thread says so
    # A WhatsApp sender texts people outside the 24-hour window only with an approved template: which one, and
    # what goes in each of its parameters ({title}, {text}, {channel}, {link}; by default the field of its name).
    whatsapp_template: str | None = None
    params: dict[str, str] = Field(default_factory=dict)
    thread_replies: bool = False  # forward replies in threads too (by default only top-level posts)
    links: bool = True  # with PUBLIC_URL set: each phone's text ends with its link to acknowledge (or resolve) it
    resolve: Regex | None = None  # a post matching this ends a forwarded alert: "RESOLVED" to the phones that got it
    # Where ``resolve`` is searched: the post's title (the default), or its whole text, for tools that say the state
    # only in a field or a line of their own (CloudWatch's "Current State: OK", Sentry's "Issue resolved by …").
    resolve_in: Literal["title", "text"] = "title"
    # A person's reaction with one of these acknowledges the alert (with ``reactions`` in ``ack_by``).
    ack_reactions: list[str] = Field(default_factory=lambda: ["white_check_mark", "eyes"])
    # reactions: any person of this organisation reacting; replies: any such person's reply in the alert's thread.
    # A reply from the alert's own people (members of its groups, its escalation steps' too) acknowledges anyway.
    ack_by: list[AckWay] = Field(default_factory=lambda: ["reactions"])
    escalate: list[EscalationStep] = Field(default_factory=list)  # stops on acknowledgement or resolution
    quiet_hours: QuietHours | None = None  # hold non-critical alerts at night, one summary per phone after

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        except ValueError as exc:
            raise ValueError(f"bad template: {exc}") from None
        unknown = [n for n in names if n not in TEMPLATE_FIELDS]
        if unknown:
            allowed = ", ".join("{" + f + "}" for f in sorted(TEMPLATE_FIELDS))
            raise ValueError(f"unknown placeholder {{{unknown[0]}}}; use {allowed}")
        return value

    @property
    def pattern(self) -> patterns.Pattern:
        return patterns.compile(self.match)

    @property
    def resolve_pattern(self) -> patterns.Pattern | None:
        return None if self.resolve is None else patterns.compile(self.resolve)


DEFAULT_HELP_TEXT = "This number sends texts from our team on Slack. Reply STOP to opt out, START to opt back in."
# A dotted path into a posted body (``data.from``): keys without dots or spaces, joined by dots.
_FIELD_PATH = re.compile(r"^[^.\s]{1,64}(\.[^.\s]{1,64}){0,5}$")


def _field_path(value: str) -> str:
    if not _FIELD_PATH.match(value):
        raise ValueError(f"'{value}' is not a field's name or a dotted path like data.from")
    return value


FieldPath = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_field_path)]


class InboundFields(_Model):
    """Where the phone and the text are in what D7 posts (dotted paths); each left out is looked for under the
    common names. ``from`` may stand for ``phone``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    phone: FieldPath | None = Field(None, validation_alias=AliasChoices("phone", "from"))
    text: FieldPath | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_phone(cls, data: Any) -> Any:
        if isinstance(data, dict) and "phone" in data and "from" in data:
            raise ValueError("give the phone's field once: as phone or as from, not both")
        return data


class Inbound(_Model):
    """Texts phones send back (``POST /d7/inbound/<secret>``): where their fields are, the HELP answer, the words
    that acknowledge an alert, and where replies to no recent send go."""

    fields: InboundFields = InboundFields()
    help_text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)] = (
        DEFAULT_HELP_TEXT
    )
    ack_words: list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]] = Field(
        default_factory=lambda: ["ACK"]
    )
    channel: str | None = None  # default: ``defaults.admin_channel``

    @field_validator("ack_words")
    @classmethod
    def _not_keywords(cls, value: list[str]) -> list[str]:
        for word in value:
            if word.upper() in INBOUND_KEYWORDS:
                raise ValueError(f"'{word}' is a keyword phones use to opt out, opt in or ask for help; pick another")
        return list({w.upper(): w for w in value}.values())

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        if value is not None and not CHANNEL_ID.match(value):
            raise ValueError(f"'{value}' is not a channel ID (C…/G…)")
        return value


class Schedule(_Model):
    """An on-call rotation: ``people`` in turn, each for ``every``, the first from ``start`` (local time in ``tz``);
    ``people`` may be one user group (S…), its members in Slack's order."""

    people: Annotated[list[str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)] = Field(min_length=1)
    every: ShiftLength = Field(le=timedelta(weeks=52))  # a shift of more than a year is not a rotation
    start: str
    tz: str = "UTC"
    channel: str | None = None  # where changes (takes, gives) are announced
    notify: bool = False  # DM the incoming person at each handoff ("you are on call for X until …")
    usergroup: str | None = None  # a user group (S…) kept equal to whoever is on call (scope usergroups:write)

    @field_validator("start")
    @classmethod
    def _start(cls, value: str) -> str:
        try:
            datetime.strptime(value, START_FORMAT)
        except ValueError:
            raise ValueError(f"'{value}' is not a local time like \"2026-12-07 09:00\" (YYYY-MM-DD HH:MM)") from None
        return value

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        return _time_zone(value)

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        if value is not None and not CHANNEL_ID.match(value):
            raise ValueError(f"'{value}' is not a channel ID (C…/G…)")
        return value

    @field_validator("usergroup")
    @classmethod
    def _usergroup(cls, value: str | None) -> str | None:
        if value is not None and not USERGROUP_ID.match(value):
            raise ValueError(f"'{value}' is not a user group ID (S…)")
        return value

    @property
    def watched(self) -> bool:
        """Whether its handoffs are noticed (a DM, a user group kept equal)."""
        return self.notify or self.usergroup is not None

    @property
    def rotation(self) -> Rotation:
        return Rotation.of(self.every, self.start, self.tz)

    @property
    def group(self) -> str | None:
        """The user group whose members take turns, when ``people`` names one."""
        return self.people[0] if len(self.people) == 1 and USERGROUP_ID.match(self.people[0]) else None


class Policy(_Model):
    """The whole policy file, after checking."""

    version: Literal[1]
    defaults: Defaults = Defaults()
    admins: list[str] = Field(default_factory=list)  # users (U…/W…) and user groups (S…) who see every send
    senders: dict[str, Sender] = Field(default_factory=dict)
    contacts: dict[str, list[str]] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    alerts: list[AlertRule] = Field(default_factory=list)
    inbound: Inbound = Inbound()
    schedules: dict[Name, Schedule] = Field(default_factory=dict)

    @property
    def inbound_channel(self) -> str | None:
        """Where replies that belong to no recent send are posted (None: nowhere; they are kept)."""
        return self.inbound.channel or self.defaults.admin_channel

    def alert_rule(self, name: str) -> AlertRule | None:
        return next((a for a in self.alerts if a.name == name), None)

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    def contact_numbers(self, group: str) -> list[PhoneNumber]:
        """Members of contact group ``group`` (already checked and in E.164)."""
        return [PhoneNumber(n) for n in self.contacts[group]]
