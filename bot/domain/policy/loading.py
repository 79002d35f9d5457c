"""Reading ``policy.yml``: parsing and checking it (every problem named by its path in the file), normalising its
numbers to E.164, and the warnings ``check`` prints about what a valid policy may not mean."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bot.domain.encoding import analyze
from bot.domain.errors import InvalidPhoneNumber, PolicyFileError, PolicyProblem
from bot.domain.models import Via
from bot.domain.phone import PhoneNumber, is_region, parse_phone, regions_of_country_code
from bot.domain.policy.evaluation import country_refusal, type_refusal
from bot.domain.policy.model import (
    GROUP_PREFIX,
    REGION_PREFIX,
    SCHEDULE_PREFIX,
    TEMPLATE_FIELDS,
    WILDCARD,
    AlertRule,
    EscalationStep,
    Policy,
    Rule,
    Sender,
)
from bot.domain.slack_ids import BOT_ID, CONVERSATION_ID, USER_ID, USERGROUP_ID

_PREFIX = re.compile(r"^\+\d{1,14}\*$")
SCHEDULE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,40}$")  # one word in `/sms oncall <schedule>`
_ALPHA_ORIGINATOR = re.compile(r"^[A-Za-z0-9 ._&-]{1,11}$")
_NUMERIC_ORIGINATOR = re.compile(r"^\+?\d{3,15}$")
# \b, \B, \w, \W, \d, \D in a pattern's text (not escaped backslashes): ASCII only in RE2.
_ASCII_CLASSES = re.compile(r"(?<!\\)(?:\\\\)*\\[bBwWdD]")


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
            if not (USER_ID.match(admin) or USERGROUP_ID.match(admin)):
                self.problem(f"admins[{i}]", f"'{admin}' is not a user (U…/W…) or user group (S…)")
        for name, sender in self.policy.senders.items():
            if (problem := _check_originator(sender, self.region)) is not None:
                self.problem(f"senders.{name}.originator", problem)
            if sender.templates and sender.via is not Via.WHATSAPP:
                self.problem(f"senders.{name}.templates", "only WhatsApp senders have templates")
        self.inbound()
        self.schedules()
        self.verify_sender()
        update = {"contacts": self.contacts(), "rules": self.rules(), "alerts": self.alerts()}
        return self.policy.model_copy(update=update)

    def verify_sender(self) -> None:
        """Codes that verify phones go by SMS: ``defaults.verify_sender`` names an SMS sender, and with
        ``verified_phones`` on there must be one (else nobody could verify, and no profile phone be texted)."""
        defaults, senders = self.policy.defaults, self.policy.senders
        name = defaults.verify_sender
        if name is not None and name not in senders:
            self.problem("defaults.verify_sender", f"unknown sender '{name}'")
        elif name is not None and senders[name].via is not Via.SMS:
            self.problem("defaults.verify_sender", f"'{name}' is not an SMS sender: codes are texted by SMS")
        elif defaults.verified_phones and not any(s.via is Via.SMS for s in senders.values()):
            self.problem("defaults.verified_phones", "needs an SMS sender to text the codes that verify phones")

    def inbound(self) -> None:
        """The HELP answer is one text: it must fit in ``defaults.max_segments``."""
        info = analyze(self.policy.inbound.help_text)
        if info.segments > self.policy.defaults.max_segments:
            self.problem(
                "inbound.help_text",
                f"needs {info.segments} SMS segments ({info.encoding.label}); defaults.max_segments is "
                f"{self.policy.defaults.max_segments}: shorten it",
            )

    def schedules(self) -> None:
        """Each schedule's people: users (U…/W…) in turn, or one user group (S…) whose members take turns."""
        for name, schedule in self.policy.schedules.items():
            if not SCHEDULE_NAME.match(name):
                self.problem(f"schedules.{name}", "a schedule's name is letters, digits, '.', '_' or '-' (up to 40)")
            if schedule.group is not None:
                continue
            for i, person in enumerate(schedule.people):
                if not USER_ID.match(person):
                    self.problem(
                        f"schedules.{name}.people[{i}]",
                        f"'{person}' is not a user (U…/W…); a user group (S…) must be the only one named",
                    )

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
        if raw.startswith(SCHEDULE_PREFIX):
            if raw.removeprefix(SCHEDULE_PREFIX) not in self.policy.schedules:
                self.problem(where, f"unknown schedule '{raw.removeprefix(SCHEDULE_PREFIX)}'")
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
            rules.append(self.rule(rule, base))
        return rules

    def rule(self, rule: Rule, base: str) -> Rule:
        """One rule's IDs, senders and templates checked; its recipients normalised (the wrong ones left out)."""
        self.problems += _check_ids(rule.slack_channels, f"{base}.slack_channels", CONVERSATION_ID, "a channel ID (C…)")
        for i, user in enumerate(rule.users):
            if user != WILDCARD and not (USER_ID.match(user) or USERGROUP_ID.match(user)):
                self.problem(f"{base}.users[{i}]", f"'{user}' is not a user (U…/W…), user group (S…) or \"*\"")
        for i, name in enumerate(rule.senders):
            if name not in self.policy.senders:
                self.problem(f"{base}.senders[{i}]", f"unknown sender '{name}'")
        known = {t for s in rule.senders if s in self.policy.senders for t in self.policy.senders[s].templates}
        for i, alias in enumerate(rule.templates or ()):
            if alias not in known:
                self.problem(f"{base}.templates[{i}]", f"no sender of this rule has a template '{alias}'")
        patterns = [self.recipient_pattern(raw, f"{base}.recipients[{i}]") for i, raw in enumerate(rule.recipients)]
        return rule.model_copy(update={"recipients": [p for p in patterns if p is not None]})

    def alert_targets(self, raw: Sequence[str], where: str) -> list[str]:
        """An alert's ``to`` (or an escalation step's): numbers, group:NAME, schedule:NAME or S… groups, normalised."""
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
        params = self.alert_params(alert, [p.name for p in template.params], base)
        return alert.model_copy(update={"params": params})

    def alert_params(self, alert: AlertRule, names: Sequence[str], base: str) -> dict[str, str]:
        """What goes in each of the template's parameters ``names``: the alert's ``params``, else the field of the
        parameter's name."""
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
        return params

    def alerts(self) -> list[AlertRule]:
        alerts = []
        seen: dict[str, int] = {}
        for a, alert in enumerate(self.policy.alerts):
            base = f"alerts[{a}]"
            if alert.name in seen:  # the name keys dedup and per-phone limits, so it must say which rule
                self.problem(f"{base}.name", f"'{alert.name}' is also the name of alerts[{seen[alert.name]}]")
            seen.setdefault(alert.name, a)
            alerts.append(self.alert(alert, base))
        return alerts

    def alert(self, alert: AlertRule, base: str) -> AlertRule:
        """One alert rule's channels, sender, template and authors checked; its phones normalised."""
        self.problems += _check_ids(
            alert.slack_channels, f"{base}.slack_channels", CONVERSATION_ID, "a channel ID (C…)"
        )
        if alert.sender not in self.policy.senders:
            self.problem(f"{base}.sender", f"unknown sender '{alert.sender}'")
        else:
            alert = self.alert_template(alert, base)
        for i, who in enumerate(alert.from_ if isinstance(alert.from_, list) else ()):
            if not (BOT_ID.match(who) or USER_ID.match(who)):
                self.problem(f"{base}.from[{i}]", f"'{who}' is not a bot (B…) or user (U…) ID")
        to = self.alert_targets(alert.to, f"{base}.to")
        return alert.model_copy(update={"to": to, "escalate": self.escalation(alert, base)})

    def escalation(self, alert: AlertRule, base: str) -> list[EscalationStep]:
        """An alert rule's escalation steps, each later than the one before, their phones normalised."""
        steps = []
        for s, step in enumerate(alert.escalate):
            where = f"{base}.escalate[{s}]"
            if s and step.after <= alert.escalate[s - 1].after:
                self.problem(f"{where}.after", "each step comes after the one before it")
            steps.append(step.model_copy(update={"to": self.alert_targets(step.to, f"{where}.to")}))
        return steps


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
    return [
        *_pattern_warnings(policy),
        *_contact_warnings(policy),
        *_recipient_warnings(policy),
        *_inbound_warnings(policy),
    ]


def _inbound_warnings(policy: Policy) -> list[PolicyProblem]:
    """``inbound`` set up with nowhere to post replies that belong to no recent send."""
    if "inbound" not in policy.model_fields_set or policy.inbound_channel is not None:
        return []
    return [
        PolicyProblem(
            "inbound.channel",
            "not set, and no defaults.admin_channel: replies from phones texted more than 7 days ago (or never) "
            "are kept but posted nowhere, and unreadable callbacks are only logged",
        )
    ]


def _pattern_warnings(policy: Policy) -> list[PolicyProblem]:
    """Alert patterns whose \\b, \\w or \\d meet letters outside ASCII."""
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
    return warnings


def _contact_warnings(policy: Policy) -> list[PolicyProblem]:
    """Contacts in countries the policy never texts."""
    warnings = []
    for group in policy.contacts:
        for i, number in enumerate(policy.contact_numbers(group)):
            if (refusal := country_refusal(policy, number)) is not None:
                warnings.append(PolicyProblem(f"contacts.{group}[{i}]", f"{refusal}, so texts to it are refused"))
    return warnings


def _recipient_warnings(policy: Policy) -> list[PolicyProblem]:
    """Rules' recipients that span many countries, or that name numbers of a type the rule refuses."""
    warnings = []
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
                if (refusal := type_refusal(rule, number, policy.defaults.show_numbers)) is not None:
                    warnings.append(PolicyProblem(where, f"{refusal}, so texts to it are refused"))
    return warnings


def _listed_numbers(policy: Policy, pattern: str) -> list[PhoneNumber]:
    """The numbers a recipient pattern names one by one: a number, or a contact group's members."""
    if pattern.startswith(GROUP_PREFIX):
        return policy.contact_numbers(pattern.removeprefix(GROUP_PREFIX))
    if pattern.startswith("+") and not pattern.endswith(WILDCARD):
        return [PhoneNumber(pattern)]
    return []
