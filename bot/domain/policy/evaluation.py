"""Deciding one send under the policy: which rule allows it, or which dimension refused it and why; and what a
person may send where (the senders, templates and user groups a form or an admission asks about)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from bot.domain.models import Via
from bot.domain.phone import NumberDisplay, PhoneNumber
from bot.domain.policy.model import GROUP_PREFIX, REGION_PREFIX, SCHEDULE_PREFIX, WILDCARD, Policy, PolicySurface, Rule
from bot.domain.slack_ids import USERGROUP_ID


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
    on_call: Mapping[str, frozenset[str]] = field(default_factory=dict)  # E.164 → the schedules it is on call for


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


def _recipient_allowed(
    policy: Policy, patterns: Sequence[str], number: PhoneNumber, on_call: frozenset[str] = frozenset()
) -> bool:
    """Whether one of ``patterns`` admits ``number``; ``on_call``: the schedules it was reached through."""
    for pattern in patterns:
        if pattern == WILDCARD:
            return True
        if pattern.startswith(SCHEDULE_PREFIX) and pattern.removeprefix(SCHEDULE_PREFIX) in on_call:
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


def type_refusal(rule: Rule, number: PhoneNumber, show: NumberDisplay) -> str | None:
    """Why ``rule`` refuses ``number`` for its type (the number shown as ``show`` says), or None when it may text
    it."""
    number_type = number.number_type
    if rule.allows_type(number_type):
        return None
    return (
        f"{number.display(show)} is {_a(number_type.label)} number; rule '{rule.name}' does not allow "
        f"{number_type.label} numbers (allow_number_types: [{number_type.value}])"
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
    """How far ``rule`` gets with the send, checked dimension by dimension up to ``through``."""
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
    return _try_recipients(policy, rule, facts, sender)


def _try_recipients(policy: Policy, rule: Rule, facts: SendRequestFacts, sender: str) -> _Attempt:
    """The rest of ``_try_rule``, once the rule admits the rest of the send: each recipient, then how many."""
    for number in facts.recipients:  # a number is shown (formatted, masked) only in a refusal: 1,000 allowed cost none
        if not _recipient_allowed(policy, rule.recipients, number, facts.on_call.get(number.e164, frozenset())):
            return _Attempt(
                rule,
                Dimension.RECIPIENT,
                f"{number.display(policy.defaults.show_numbers)} is outside the numbers rule '{rule.name}' allows",
            )
        if (refusal := type_refusal(rule, number, policy.defaults.show_numbers)) is not None:
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


def channel_templates(policy: Policy, channel_id: str) -> list[tuple[str, str]]:
    """``(sender, alias)`` of each approved WhatsApp template a rule for this channel allows, in the policy's order:
    what ``help`` lists (whether the asker may use one is decided when they send)."""
    found: list[tuple[str, str]] = []
    for rule in policy.rules:
        if WILDCARD not in rule.slack_channels and channel_id not in rule.slack_channels:
            continue
        allowed = rule_templates(policy, rule)
        found += [
            (name, alias) for name in rule.senders for alias in policy.senders[name].templates if alias in allowed
        ]
    return list(dict.fromkeys(found))


def rule_templates(policy: Policy, rule: Rule) -> list[str]:
    """The WhatsApp templates a rule allows: its ``templates``, else every template of its senders."""
    if rule.templates is not None:
        return list(rule.templates)
    return list(dict.fromkeys(t for s in rule.senders for t in policy.senders[s].templates))
