"""The policy file (``policy.yml``): who may send, from which Slack channel, through which sender, to whom.

``load_policy`` reads and checks a file; every problem is reported with the file and its path inside it
(``rules[1].senders[0]: unknown sender 'ops-sm'``). ``evaluate`` decides one send: default deny, allowed only
when a single rule allows all of it, and a denial names the dimension that failed; ``evaluate_before_recipients``
decides as much of it as can be decided before any recipient is looked up.
"""

from __future__ import annotations

import re
import string
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.domain import patterns
from bot.domain.errors import InvalidPhoneNumber, PolicyFileError, PolicyProblem
from bot.domain.models import Via
from bot.domain.phone import (
    SAFE_NUMBER_TYPES,
    NumberDisplay,
    NumberType,
    PhoneNumber,
    is_region,
    parse_phone,
    regions_of_country_code,
)
from bot.domain.templates import Template

WILDCARD = "*"
GROUP_PREFIX = "group:"
REGION_PREFIX = "region:"
TEMPLATE_FIELDS = frozenset({"text", "title", "channel", "link"})

_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_PUBLIC_OR_PRIVATE_CHANNEL = re.compile(r"^[CG][A-Z0-9]{2,}$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
USERGROUP_ID = re.compile(r"^S[A-Z0-9]{2,}$")
_BOT_ID = re.compile(r"^B[A-Z0-9]{2,}$")
_PREFIX = re.compile(r"^\+\d{1,14}\*$")
_ALPHA_ORIGINATOR = re.compile(r"^[A-Za-z0-9 ._&-]{1,11}$")
_NUMERIC_ORIGINATOR = re.compile(r"^\+?\d{3,15}$")
_ALIAS = re.compile(r"^[A-Za-z0-9_.\-]{1,40}$")
# \b, \B, \w, \W, \d, \D in a pattern's text (not escaped backslashes): ASCII only in RE2.
_ASCII_CLASSES = re.compile(r"(?<!\\)(?:\\\\)*\\[bBwWdD]")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]


def parse_duration(text: str) -> timedelta:
    """``30s``, ``10m``, ``1h``, ``2d`` → timedelta; anything else raises ``ValueError``."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"'{text}' is not a duration like 30s, 10m, 1h or 2d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


def _positive(value: timedelta) -> timedelta:
    # 0 or less never holds: a dedupe window, a per-phone limit or an escalation step of 0 does nothing.
    if value <= timedelta(0):
        raise ValueError(f"'{value.total_seconds():g}' seconds is not a duration: use one like 30s, 10m, 1h or 2d")
    return value


# ``30s``, ``10m``, ``1h``, ``2d`` in the file; a timedelta once read, longer than nothing.
Duration = Annotated[timedelta, BeforeValidator(_duration), AfterValidator(_positive)]


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


class Budget(_Model):
    """At most ``messages`` billed messages (recipients x SMS segments; one per WhatsApp recipient) per ``per``."""

    messages: int = Field(ge=1)
    per: Duration

    @field_validator("per")
    @classmethod
    def _window(cls, value: timedelta) -> timedelta:
        # A window of 0 (or less, or a few milliseconds) never holds: every send finds it empty.
        if value < MIN_BUDGET_WINDOW:
            raise ValueError(
                f"a budget's window must be at least 1 minute (like 1h or 1d), not {value.total_seconds():g} s"
            )
        return value


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
        if value is not None and not _PUBLIC_OR_PRIVATE_CHANNEL.match(value):
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
    per: Duration

    @field_validator("per")
    @classmethod
    def _window(cls, value: timedelta) -> timedelta:
        return Budget._window(value)  # the same reason: a window under a minute hardly holds


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
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{value}' (use names like Europe/London)") from None
        return value

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
    resolve: Regex | None = None  # a post matching this ends a forwarded alert: "RESOLVED" to the phones that got it
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


class Policy(_Model):
    """The whole policy file, after checking."""

    version: Literal[1]
    defaults: Defaults = Defaults()
    admins: list[str] = Field(default_factory=list)  # users (U…/W…) and user groups (S…) who see every send
    senders: dict[str, Sender] = Field(default_factory=dict)
    contacts: dict[str, list[str]] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    alerts: list[AlertRule] = Field(default_factory=list)

    def alert_rule(self, name: str) -> AlertRule | None:
        return next((a for a in self.alerts if a.name == name), None)

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    def contact_numbers(self, group: str) -> list[PhoneNumber]:
        """Members of contact group ``group`` (already checked and in E.164)."""
        return [PhoneNumber(n) for n in self.contacts[group]]


# ---------------------------------------------------------------- loading


def _path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _from_validation(exc: ValidationError) -> list[PolicyProblem]:
    problems = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal[")))]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required"
        problems.append(PolicyProblem(_path(loc), msg))
    # Union types report one entry per branch; keep one per path.
    unique: dict[str, PolicyProblem] = {}
    for problem in problems:
        unique.setdefault(problem.path, problem)
    return list(unique.values())


def _check_originator(sender: Sender, region: str) -> str | None:
    if sender.via is Via.WHATSAPP:
        try:
            parse_phone(sender.originator, region)
        except InvalidPhoneNumber as exc:
            return f"a WhatsApp sender must be a registered phone number: {exc}"
        return None
    if _ALPHA_ORIGINATOR.match(sender.originator) or _NUMERIC_ORIGINATOR.match(sender.originator):
        return None
    return f"originator '{sender.originator}' must be up to 11 letters/digits or a number of up to 15 digits"


def _check_ids(values: Sequence[str], where: str, pattern: re.Pattern[str], what: str) -> list[PolicyProblem]:
    problems = []
    for i, value in enumerate(values):
        if value != WILDCARD and not pattern.match(value):
            problems.append(PolicyProblem(f"{where}[{i}]", f"'{value}' is not {what} or \"*\""))
    return problems


class _Normaliser:
    """Checks cross-references and numbers, collecting every problem; gives the policy with numbers in E.164."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.region = policy.defaults.region
        self.problems: list[PolicyProblem] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(PolicyProblem(where, message))

    def run(self) -> Policy:
        for i, admin in enumerate(self.policy.admins):
            if not (_USER_ID.match(admin) or USERGROUP_ID.match(admin)):
                self.problem(f"admins[{i}]", f"'{admin}' is not a user (U…/W…) or user group (S…)")
        for name, sender in self.policy.senders.items():
            if (problem := _check_originator(sender, self.region)) is not None:
                self.problem(f"senders.{name}.originator", problem)
            if sender.templates and sender.via is not Via.WHATSAPP:
                self.problem(f"senders.{name}.templates", "only WhatsApp senders have templates")
        update = {"contacts": self.contacts(), "rules": self.rules(), "alerts": self.alerts()}
        return self.policy.model_copy(update=update)

    def contacts(self) -> dict[str, list[str]]:
        contacts: dict[str, list[str]] = {}
        for group, numbers in self.policy.contacts.items():
            if not numbers:
                self.problem(f"contacts.{group}", "a contact group needs at least one number")
            contacts[group] = []
            for i, raw in enumerate(numbers):
                try:
                    contacts[group].append(parse_phone(str(raw), self.region).e164)
                except InvalidPhoneNumber as exc:
                    self.problem(f"contacts.{group}[{i}]", str(exc))
        return contacts

    def recipient_pattern(self, raw: str, where: str, allow_usergroups: bool = False) -> str | None:
        if raw == WILDCARD or _PREFIX.match(raw):
            return raw
        if raw.startswith(REGION_PREFIX):
            return self.region_pattern(raw, where)
        if raw.startswith(GROUP_PREFIX):
            if raw.removeprefix(GROUP_PREFIX) not in self.policy.contacts:
                self.problem(where, f"unknown contact group '{raw.removeprefix(GROUP_PREFIX)}'")
            return raw
        if allow_usergroups and USERGROUP_ID.match(raw):
            return raw
        try:
            return parse_phone(raw, self.region).e164
        except InvalidPhoneNumber as exc:
            self.problem(where, str(exc))
            return None

    def region_pattern(self, raw: str, where: str) -> str | None:
        codes = [code.strip().upper() for code in raw.removeprefix(REGION_PREFIX).split(",")]
        unknown = [code for code in codes if not is_region(code)]
        if unknown:
            self.problem(
                where, f"unknown region '{unknown[0]}' (use two-letter codes such as region:US or region:US,CA)"
            )
            return None
        return REGION_PREFIX + ",".join(dict.fromkeys(codes))

    def rules(self) -> list[Rule]:
        rules = []
        names: set[str] = set()
        for r, rule in enumerate(self.policy.rules):
            base = f"rules[{r}]"
            if rule.name in names:
                self.problem(f"{base}.name", f"another rule is already named '{rule.name}'")
            names.add(rule.name)
            self.problems += _check_ids(rule.slack_channels, f"{base}.slack_channels", _CHANNEL_ID, "a channel ID (C…)")
            for i, user in enumerate(rule.users):
                if user != WILDCARD and not (_USER_ID.match(user) or USERGROUP_ID.match(user)):
                    self.problem(f"{base}.users[{i}]", f"'{user}' is not a user (U…/W…), user group (S…) or \"*\"")
            for i, name in enumerate(rule.senders):
                if name not in self.policy.senders:
                    self.problem(f"{base}.senders[{i}]", f"unknown sender '{name}'")
            known = {t for s in rule.senders if s in self.policy.senders for t in self.policy.senders[s].templates}
            for i, alias in enumerate(rule.templates or ()):
                if alias not in known:
                    self.problem(f"{base}.templates[{i}]", f"no sender of this rule has a template '{alias}'")
            patterns = [self.recipient_pattern(raw, f"{base}.recipients[{i}]") for i, raw in enumerate(rule.recipients)]
            rules.append(rule.model_copy(update={"recipients": [p for p in patterns if p is not None]}))
        return rules

    def alert_targets(self, raw: Sequence[str], where: str) -> list[str]:
        """An alert's ``to`` (or an escalation step's): numbers, group:NAME or S… groups, normalised."""
        targets = [self.recipient_pattern(value, f"{where}[{i}]", True) for i, value in enumerate(raw)]
        for i, target in enumerate(targets):
            if target is not None and (
                target == WILDCARD or target.endswith(WILDCARD) or target.startswith(REGION_PREFIX)
            ):
                self.problem(f"{where}[{i}]", "alerts go to numbers, group:NAME or S… groups")
        return [t for t in targets if t is not None]

    def alert_template(self, alert: AlertRule, base: str) -> AlertRule:
        """A WhatsApp alert rule names an approved template of its sender and fills each of its parameters (from
        ``params``, or the alert field of the parameter's name); an SMS rule has neither."""
        sender = self.policy.senders[alert.sender]
        if sender.via is not Via.WHATSAPP:
            if alert.whatsapp_template is not None or alert.params:
                self.problem(f"{base}.whatsapp_template", f"sender '{alert.sender}' is not a WhatsApp sender")
            return alert
        if alert.whatsapp_template is None:
            known = ", ".join(sender.templates) or "none: add templates under the sender"
            self.problem(
                f"{base}.whatsapp_template",
                "a WhatsApp alert needs an approved template: WhatsApp delivers free text only to people who wrote "
                f"in the last 24 hours (templates of '{alert.sender}': {known})",
            )
            return alert
        template = sender.templates.get(alert.whatsapp_template)
        if template is None:
            self.problem(
                f"{base}.whatsapp_template", f"sender '{alert.sender}' has no template '{alert.whatsapp_template}'"
            )
            return alert
        names = [p.name for p in template.params]
        for name in alert.params:
            if name not in names:
                self.problem(f"{base}.params.{name}", f"template '{alert.whatsapp_template}' has no parameter '{name}'")
        params: dict[str, str] = {}
        for name in names:
            value = alert.params.get(name, "{" + name + "}" if name in TEMPLATE_FIELDS else None)
            if value is None:
                fields = ", ".join("{" + f + "}" for f in sorted(TEMPLATE_FIELDS))
                self.problem(f"{base}.params.{name}", f"say what goes in '{name}' (text and {fields})")
                continue
            try:
                unknown = [f for f in _template_fields(value) if f not in TEMPLATE_FIELDS]
            except ValueError as exc:
                self.problem(f"{base}.params.{name}", f"bad template: {exc}")
                continue
            if unknown:
                self.problem(f"{base}.params.{name}", f"unknown placeholder {{{unknown[0]}}}")
            params[name] = value
        return alert.model_copy(update={"params": params})

    def alerts(self) -> list[AlertRule]:
        alerts = []
        seen: dict[str, int] = {}
        for a, alert in enumerate(self.policy.alerts):
            base = f"alerts[{a}]"
            if alert.name in seen:  # the name keys dedup and per-phone limits, so it must say which rule
                self.problem(f"{base}.name", f"'{alert.name}' is also the name of alerts[{seen[alert.name]}]")
            seen.setdefault(alert.name, a)
            self.problems += _check_ids(
                alert.slack_channels, f"{base}.slack_channels", _CHANNEL_ID, "a channel ID (C…)"
            )
            if alert.sender not in self.policy.senders:
                self.problem(f"{base}.sender", f"unknown sender '{alert.sender}'")
            else:
                alert = self.alert_template(alert, base)
            for i, who in enumerate(alert.from_ if isinstance(alert.from_, list) else ()):
                if not (_BOT_ID.match(who) or _USER_ID.match(who)):
                    self.problem(f"{base}.from[{i}]", f"'{who}' is not a bot (B…) or user (U…) ID")
            to = self.alert_targets(alert.to, f"{base}.to")
            steps = []
            for s, step in enumerate(alert.escalate):
                where = f"{base}.escalate[{s}]"
                if s and step.after <= alert.escalate[s - 1].after:
                    self.problem(f"{where}.after", "each step comes after the one before it")
                steps.append(step.model_copy(update={"to": self.alert_targets(step.to, f"{where}.to")}))
            alerts.append(alert.model_copy(update={"to": to, "escalate": steps}))
        return alerts


def _template_fields(value: str) -> list[str]:
    """The ``{field}`` names a template string uses; ``ValueError`` when it is not a template."""
    return [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]


def _normalise(policy: Policy) -> tuple[Policy, list[PolicyProblem]]:
    """Check cross-references and numbers; return the policy with every number in E.164."""
    normaliser = _Normaliser(policy)
    return normaliser.run(), normaliser.problems


def parse_policy(data: Any, file: str = "policy.yml") -> Policy:
    """Check already-parsed YAML data; raises ``PolicyFileError`` listing every problem."""
    if not isinstance(data, dict):
        raise PolicyFileError(file, [PolicyProblem("", "the file must be a YAML mapping with version: 1")])
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyFileError(file, _from_validation(exc)) from None
    policy, problems = _normalise(policy)
    if problems:
        raise PolicyFileError(file, problems)
    return policy


def load_policy(path: str | Path) -> Policy:
    """Read and check a policy file; raises ``PolicyFileError`` naming the file and each problem."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyFileError(file, [PolicyProblem("", f"cannot read the file: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyFileError(file, [PolicyProblem(where, f"not valid YAML: {problem}")]) from None
    return parse_policy(data, file)


def policy_warnings(policy: Policy) -> list[PolicyProblem]:
    """What a checked policy allows or refuses that its author may not mean; ``check`` prints these, loading and
    sending ignore them."""
    warnings = []
    for a, alert in enumerate(policy.alerts):
        named = [("match", alert.match), ("resolve", alert.resolve)]
        named.append(("quiet_hours.except", alert.quiet_hours.except_ if alert.quiet_hours else None))
        for key, pattern in named:
            if pattern is not None and not pattern.isascii() and _ASCII_CLASSES.search(pattern):
                warnings.append(
                    PolicyProblem(
                        f"alerts[{a}].{key}",
                        "\\b, \\w and \\d are ASCII only (RE2), so they never match next to or inside "
                        "'é' or 'ошибка': use \\pL for a letter, or drop the \\b",
                    )
                )
    for group in policy.contacts:
        for i, number in enumerate(policy.contact_numbers(group)):
            if (refusal := country_refusal(policy, number)) is not None:
                warnings.append(PolicyProblem(f"contacts.{group}[{i}]", f"{refusal}, so texts to it are refused"))
    for r, rule in enumerate(policy.rules):
        for i, pattern in enumerate(rule.recipients):
            where = f"rules[{r}].recipients[{i}]"
            if _PREFIX.match(pattern) and len(regions := regions_of_country_code(pattern[1:-1])) > 1:
                listed = ", ".join(sorted(regions))
                warnings.append(
                    PolicyProblem(
                        where,
                        f"'{pattern}' spans {len(regions)} countries and territories ({listed}); "
                        f"name the ones you mean, like region:{regions[0]}",
                    )
                )
            for number in _listed_numbers(policy, pattern):
                if (refusal := _type_refusal(rule, number, number.display(policy.defaults.show_numbers))) is not None:
                    warnings.append(PolicyProblem(where, f"{refusal}, so texts to it are refused"))
    return warnings


def _listed_numbers(policy: Policy, pattern: str) -> list[PhoneNumber]:
    """The numbers a recipient pattern names one by one: a number, or a contact group's members."""
    if pattern.startswith(GROUP_PREFIX):
        return policy.contact_numbers(pattern.removeprefix(GROUP_PREFIX))
    if pattern.startswith("+") and not pattern.endswith(WILDCARD):
        return [PhoneNumber(pattern)]
    return []


# ---------------------------------------------------------------- deciding


@dataclass(frozen=True)
class SendRequestFacts:
    """What the policy needs to know about one send."""

    user_id: str
    channel_id: str
    via: Via
    recipients: Sequence[PhoneNumber]
    sender: str | None = None  # None: the first sender the matching rule allows for this via
    user_groups: frozenset[str] = frozenset()
    channel_label: str | None = None  # "#ops" when known; the ID otherwise
    user_label: str | None = None
    template: str | None = None  # WhatsApp: the approved template the send names (None: free text)
    surface: PolicySurface = PolicySurface.COMMANDS  # how the send was started


class Dimension(StrEnum):
    """What a denial is about, in the order rules are checked: a rule that gets further explains better."""

    VIA = "via"
    SURFACE = "surface"
    CHANNEL = "channel"
    USER = "user"
    SENDER = "sender"
    TEMPLATE = "template"
    RECIPIENT = "recipient"
    COUNT = "count"
    RULE = "rule"  # the policy has no rules at all


@dataclass(frozen=True)
class Decision:
    """The verdict: when allowed, ``rule`` and ``sender`` say which; when denied, ``reason`` says why."""

    allowed: bool
    reason: str
    rule: str | None = None
    sender: str | None = None
    dimension: Dimension | None = None  # what failed


@dataclass
class _Attempt:
    rule: Rule
    dimension: Dimension | None  # None: the rule allows it all
    reason: str = ""
    sender: str | None = None

    @property
    def depth(self) -> int:
        return len(_DEPTH) if self.dimension is None else _DEPTH[self.dimension]


_DEPTH = {
    Dimension.VIA: 0,
    Dimension.SURFACE: 1,
    Dimension.CHANNEL: 2,
    Dimension.USER: 3,
    Dimension.SENDER: 4,
    Dimension.TEMPLATE: 5,
    Dimension.RECIPIENT: 6,
    Dimension.COUNT: 7,
}


def _recipient_allowed(policy: Policy, patterns: Sequence[str], number: PhoneNumber) -> bool:
    for pattern in patterns:
        if pattern == WILDCARD:
            return True
        if pattern.endswith(WILDCARD) and number.e164.startswith(pattern[:-1]):
            return True
        if pattern.startswith(GROUP_PREFIX) and number.e164 in policy.contacts.get(
            pattern.removeprefix(GROUP_PREFIX), ()
        ):
            return True
        if pattern == number.e164:
            return True
        if pattern.startswith(REGION_PREFIX) and number.region in pattern.removeprefix(REGION_PREFIX).split(","):
            return True
    return False


def _type_refusal(rule: Rule, number: PhoneNumber, shown: str) -> str | None:
    """Why ``rule`` refuses ``number`` for its type, or None when it may text it."""
    number_type = number.number_type
    if rule.allows_type(number_type):
        return None
    return (
        f"{shown} is {_a(number_type.label)} number; rule '{rule.name}' does not allow {number_type.label} numbers "
        f"(allow_number_types: [{number_type.value}])"
    )


def country_refusal(policy: Policy, number: PhoneNumber) -> str | None:
    """Why texts may not go to ``number`` at all (outside ``defaults.countries``), or None. Every surface asks this,
    whatever rule or list named the number."""
    allowed = policy.defaults.allowed_countries
    region = number.region
    if region in allowed:
        return None
    shown = number.display(policy.defaults.show_numbers)
    where = f"a number in {region}" if region else "a number of no country"
    whose = "defaults.countries" if policy.defaults.countries is not None else "defaults.region; add defaults.countries"
    return f"{shown} is {where}; the policy texts only numbers in {', '.join(allowed)} ({whose})"


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _try_rule(policy: Policy, rule: Rule, facts: SendRequestFacts, through: Dimension) -> _Attempt:
    channel = facts.channel_label or facts.channel_id
    user = facts.user_label or facts.user_id
    via = facts.via.label
    usable = [s for s in rule.senders if policy.senders[s].via is facts.via]
    if not usable:
        return _Attempt(rule, Dimension.VIA, f"no rule allows sending via {via}")
    if facts.surface not in rule.surfaces:
        allowed = ", ".join(rule.surfaces)
        return _Attempt(
            rule,
            Dimension.SURFACE,
            f"rule '{rule.name}' does not take sends from {facts.surface.label} (its surfaces: {allowed}; "
            f"an admin may add {facts.surface.value})",
        )
    if WILDCARD not in rule.slack_channels and facts.channel_id not in rule.slack_channels:
        return _Attempt(rule, Dimension.CHANNEL, f"{channel} is not allowed to send via {via}")
    if WILDCARD not in rule.users and not (facts.user_id in rule.users or facts.user_groups.intersection(rule.users)):
        return _Attempt(rule, Dimension.USER, f"{user} is not allowed to send via {via} from {channel}")
    sender = facts.sender if facts.sender is not None else usable[0]
    if sender not in usable:
        return _Attempt(
            rule,
            Dimension.SENDER,
            f"sender '{sender}' is not allowed for {user} in {channel} (allowed: {', '.join(usable)})",
        )
    if facts.template is not None and facts.template not in rule_templates(policy, rule):
        allowed = ", ".join(rule_templates(policy, rule)) or "none"
        reason = f"rule '{rule.name}' does not allow the template '{facts.template}' (it allows: {allowed})"
        return _Attempt(rule, Dimension.TEMPLATE, reason)
    if _DEPTH[through] < _DEPTH[Dimension.RECIPIENT]:
        return _Attempt(rule, None, sender=sender)
    for number in facts.recipients:
        shown = number.display(policy.defaults.show_numbers)
        if not _recipient_allowed(policy, rule.recipients, number):
            return _Attempt(
                rule,
                Dimension.RECIPIENT,
                f"{shown} is outside the numbers rule '{rule.name}' allows",
            )
        if (refusal := _type_refusal(rule, number, shown)) is not None:
            return _Attempt(rule, Dimension.RECIPIENT, refusal)
    if (too_many := count_refusal(policy, rule, len(facts.recipients))) is not None:
        return _Attempt(rule, Dimension.COUNT, too_many)
    return _Attempt(rule, None, sender=sender)


def recipient_limit(policy: Policy, rule: Rule) -> int:
    return rule.max_recipients if rule.max_recipients is not None else policy.defaults.max_recipients


def count_refusal(policy: Policy, rule: Rule, count: int) -> str | None:
    """Why ``rule`` refuses a send to ``count`` recipients, or None when it may."""
    limit = recipient_limit(policy, rule)
    if count <= limit:
        return None
    whose = (
        f"rule '{rule.name}' allows"
        if rule.max_recipients is not None
        else f"the policy allows per send (defaults.max_recipients; rule '{rule.name}' sets no max_recipients)"
    )
    return f"{count} recipients is more than the {limit} {whose}"


def evaluate(policy: Policy, facts: SendRequestFacts) -> Decision:
    """Decide one send. Default deny; allowed only when one rule allows all of it.

    When every rule refuses, the reason comes from the rule that got furthest (channel, then user, sender,
    recipients and count), so it names the most specific dimension that failed.
    """
    return _evaluate(policy, facts, Dimension.COUNT)


def evaluate_before_recipients(policy: Policy, facts: SendRequestFacts) -> Decision:
    """Decide what needs no recipients (via, channel, user, sender, template); ``facts.recipients`` is not looked at.

    The same rules checked the same way as ``evaluate``, stopping before the recipients: a refusal here is the one
    ``evaluate`` gives whatever recipients there turn out to be (each rule fails on the same check, so the furthest
    is the same rule), and resolving them would be wasted look-ups. Allowed only means some rule may allow it.
    """
    return _evaluate(policy, facts, Dimension.TEMPLATE)


def too_many_named(policy: Policy, facts: SendRequestFacts, named: int) -> str | None:
    """Why a request naming at least ``named`` recipients is refused whatever they turn out to be, or None: every
    rule that may allow it (as ``evaluate_before_recipients`` decides) allows fewer. Asked before anyone is looked
    up: a thousand people named would be a thousand users.info calls."""
    rules = [r for r in policy.rules if _try_rule(policy, r, facts, Dimension.TEMPLATE).dimension is None]
    widest = max(rules, key=lambda r: recipient_limit(policy, r), default=None)
    return None if widest is None else count_refusal(policy, widest, named)


def _evaluate(policy: Policy, facts: SendRequestFacts, through: Dimension) -> Decision:
    """``evaluate`` with the dimensions after ``through`` left out."""
    if facts.sender is not None:
        known = policy.senders.get(facts.sender)
        if known is None:
            return Decision(False, f"unknown sender '{facts.sender}'", dimension=Dimension.SENDER)
        if known.via is not facts.via:
            return Decision(
                False,
                f"sender '{facts.sender}' sends via {known.via.label}, not {facts.via.label}",
                dimension=Dimension.SENDER,
            )
    recipients_known = _DEPTH[through] >= _DEPTH[Dimension.RECIPIENT]
    if recipients_known and not facts.recipients:
        return Decision(False, "no recipients", dimension=Dimension.RECIPIENT)
    best: _Attempt | None = None
    for rule in policy.rules:
        attempt = _try_rule(policy, rule, facts, through)
        if attempt.depth == len(_DEPTH):
            # The last word, whatever the rule's patterns admitted ("+1*" spans 25 countries).
            if recipients_known and (
                refusals := [r for n in facts.recipients if (r := country_refusal(policy, n)) is not None]
            ):
                return Decision(False, refusals[0], rule=rule.name, dimension=Dimension.RECIPIENT)
            verdict = f"allowed by rule '{rule.name}'" if recipients_known else f"rule '{rule.name}' may allow it"
            return Decision(True, verdict, rule=rule.name, sender=attempt.sender)
        if best is None or attempt.depth > best.depth:
            best = attempt
    if best is None:
        return Decision(False, "the policy has no rules, so nothing may be sent", dimension=Dimension.RULE)
    return Decision(False, best.reason, rule=best.rule.name, dimension=best.dimension)


def groups_to_look_up(
    policy: Policy, user_id: str, channel_id: str | None, via: Via | None = None, *, include_admins: bool = False
) -> list[str]:
    """The user groups (S…) whose members can change what this user may send here: those named by a rule for this
    channel (any channel when None) and via (any when None) that does not already admit the user by ID or "*".
    Nothing else is worth a Slack look-up. With ``include_admins``, also the groups in ``admins`` (unless the
    user is an admin by ID), for a caller that will ask ``is_admin``."""
    groups: list[str] = []
    if include_admins and user_id not in policy.admins:
        groups += sorted(admin_groups(policy))
    for rule in policy.rules:
        if channel_id is not None and WILDCARD not in rule.slack_channels and channel_id not in rule.slack_channels:
            continue
        if via is not None and not any(policy.senders[s].via is via for s in rule.senders):
            continue
        if WILDCARD in rule.users or user_id in rule.users:
            continue
        groups += [g for g in rule.users if USERGROUP_ID.match(g) and g not in groups]
    return groups


def admin_groups(policy: Policy) -> frozenset[str]:
    """The user groups (S…) named in ``admins``: the ones worth looking up to decide ``is_admin``."""
    return frozenset(a for a in policy.admins if USERGROUP_ID.match(a))


def is_admin(policy: Policy, user_id: str, user_groups: Collection[str]) -> bool:
    """Whether this user may see any send's status and the admin views: named in ``admins``, or a member of a
    user group named there (``user_groups`` are the user's groups, as far as they were looked up)."""
    return user_id in policy.admins or not admin_groups(policy).isdisjoint(user_groups)


def rules_for(
    policy: Policy,
    user_id: str,
    channel_id: str | None,
    user_groups: frozenset[str] = frozenset(),
    surface: PolicySurface | None = None,
) -> list[Rule]:
    """The rules that admit this user in this channel (any channel when ``channel_id`` is None), for sends started
    on ``surface`` (any when None)."""
    return [
        rule
        for rule in policy.rules
        if (channel_id is None or WILDCARD in rule.slack_channels or channel_id in rule.slack_channels)
        and (WILDCARD in rule.users or user_id in rule.users or user_groups.intersection(rule.users))
        and (surface is None or surface in rule.surfaces)
    ]


def allowed_senders(
    policy: Policy,
    user_id: str,
    channel_id: str | None,
    user_groups: frozenset[str] = frozenset(),
    surface: PolicySurface | None = PolicySurface.FORMS,
) -> list[str]:
    """Senders some rule lets this user use from this channel (any channel when ``channel_id`` is None).

    What a form may offer; the send itself is still decided by ``evaluate`` with its recipients.
    """
    rules = rules_for(policy, user_id, channel_id, user_groups, surface)
    return list(dict.fromkeys(s for rule in rules for s in rule.senders))


def allowed_templates(
    policy: Policy,
    user_id: str,
    channel_id: str | None,
    user_groups: frozenset[str] = frozenset(),
    surface: PolicySurface | None = None,
) -> dict[str, str]:
    """The WhatsApp templates some rule lets this user send from this channel: alias → the sender that has it."""
    found: dict[str, str] = {}
    for rule in rules_for(policy, user_id, channel_id, user_groups, surface):
        allowed = rule_templates(policy, rule)
        for sender in rule.senders:
            for alias in policy.senders[sender].templates:
                if alias in allowed:
                    found.setdefault(alias, sender)
    return found


def why_nothing_allowed(policy: Policy, channel_id: str | None, channel_label: str) -> str:
    """Why ``allowed_senders`` is empty, in the policy's words."""
    if not policy.rules:
        return "the policy has no rules, so nothing may be sent"
    if channel_id is not None and not any(
        WILDCARD in rule.slack_channels or channel_id in rule.slack_channels for rule in policy.rules
    ):
        return f"{channel_label} is not allowed to send texts"
    where = f" from {channel_label}" if channel_id is not None else ""
    return f"no rule of the policy lets you send texts{where}"


def rule_templates(policy: Policy, rule: Rule) -> list[str]:
    """The WhatsApp templates a rule allows: its ``templates``, else every template of its senders."""
    if rule.templates is not None:
        return list(rule.templates)
    return list(dict.fromkeys(t for s in rule.senders for t in policy.senders[s].templates))
