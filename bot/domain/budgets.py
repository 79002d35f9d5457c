"""Budgets: how many billed messages a person, a channel, a rule or the workspace may send in a period.

The policy names them: ``limits`` on a rule (``per_user``, ``per_channel``) or an alert rule (``per_rule``), and
``defaults.limits`` across the workspace (``per_user``, ``per_channel`` over every rule, ``workspace`` over
everything, alerts included). ``charges`` lists the budgets one checked send counts against and ``billed_messages``
what it costs; the ledger (``BudgetLedger``) counts it against all of them or none.

A budget's window opens with the first message it counts and lasts its period; when the window ends the budget is
whole again ("refills"). A send that D7 provably did not send (refused, rejected, failed) gives its messages back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.domain import keys
from bot.domain.alerts import describe_window
from bot.domain.models import Via
from bot.domain.policy import Budget, Policy
from bot.domain.sends import PreparedSend

WORKSPACE = "workspace"


@dataclass(frozen=True)
class Charge:
    """One budget a send counts against."""

    key: str  # the budget's identity in the ledger: scope and whose ("rule:support:user:U1")
    budget: Budget
    name: str  # how a refusal names it: "your budget in rule 'support'"
    scope: str  # which of the policy's kinds of budget: rule_per_user, ..., workspace, alert_rule (metrics)

    @property
    def described(self) -> str:
        return describe_budget(self.budget)


@dataclass(frozen=True)
class Usage:
    """What a budget's current window has counted; ``refills_at`` None when no window is open (nothing used)."""

    used: int = 0
    refills_at: datetime | None = None


@dataclass(frozen=True)
class Overrun:
    """The budget a send would overrun: what its window has used, what the send needs, when it refills (None: the
    send needs more than the whole budget, so waiting will not help)."""

    charge: Charge
    used: int
    needed: int
    refills_at: datetime | None

    @property
    def left(self) -> int:
        return max(self.charge.budget.messages - self.used, 0)


def describe_budget(budget: Budget) -> str:
    """``50 messages per 1h``."""
    unit = "message" if budget.messages == 1 else "messages"
    return f"{budget.messages} {unit} per {describe_window(budget.per)}"


def billed_messages(send: PreparedSend) -> int:
    """What D7 bills for one send: recipients x segments for SMS, one per recipient for WhatsApp."""
    recipients = len(send.recipients)
    if send.via is Via.WHATSAPP:
        return recipients
    return recipients * (send.sms.segments if send.sms is not None else 1)


def cost_in_words(send: PreparedSend) -> str:
    """``3 messages (3 recipients x 1 segment)``."""
    messages, recipients = billed_messages(send), len(send.recipients)
    people = f"{recipients} recipient{'s' if recipients != 1 else ''}"
    if send.via is Via.WHATSAPP or send.sms is None:
        return f"{messages} message{'s' if messages != 1 else ''} ({people})"
    segments = send.sms.segments
    parts = f"{people} × {segments} segment{'s' if segments != 1 else ''}"
    return f"{messages} message{'s' if messages != 1 else ''} ({parts})"


def charges(policy: Policy, send: PreparedSend, channel_label: str) -> list[Charge]:
    """The budgets ``send`` counts against, the narrowest first (a refusal names the first it would overrun). The
    bot's answers to phones count against none: a STOP must be confirmed whatever the budgets say."""
    if keys.is_answer(send.request.idempotency_key):
        return []
    if send.alert is None:
        return budgets_of(policy, send.rule, send.request.user_id, send.request.channel_id, channel_label, "your")
    found: list[Charge] = []
    alert_rule = policy.alert_rule(send.alert.rule)
    if alert_rule is not None and (budget := alert_rule.limits.per_rule) is not None:
        name = f"the budget of alert rule '{alert_rule.name}'"
        found.append(Charge(f"alert:{alert_rule.name}", budget, name, "alert_rule"))
    if (workspace := policy.defaults.limits.workspace) is not None:
        found.append(Charge(WORKSPACE, workspace, "the workspace's budget", "workspace"))
    return found


def budgets_of(
    policy: Policy, rule_name: str, user_id: str, channel_id: str, channel_label: str, whose: str = "the user's"
) -> list[Charge]:
    """The budgets a send allowed by ``rule_name`` for this user from this channel counts against, narrowest first."""
    rule, limits = policy.rule(rule_name), policy.defaults.limits
    own = rule.limits if rule is not None else None
    candidates = [
        (
            own and own.per_user,
            f"rule:{rule_name}:user:{user_id}",
            f"{whose} budget in rule '{rule_name}'",
            "rule_per_user",
        ),
        (
            own and own.per_channel,
            f"rule:{rule_name}:channel:{channel_id}",
            f"the budget of {channel_label} in rule '{rule_name}'",
            "rule_per_channel",
        ),
        (limits.user_budget, f"user:{user_id}", f"{whose} workspace-wide budget", "per_user"),
        (limits.per_channel, f"channel:{channel_id}", f"the workspace-wide budget of {channel_label}", "per_channel"),
        (limits.workspace, WORKSPACE, "the workspace's budget", "workspace"),
    ]
    return [Charge(key, budget, name, scope) for budget, key, name, scope in candidates if budget]


@dataclass(frozen=True)
class Window:
    """A budget's current window as stored: when it opened, when it ends, what it has counted."""

    start: datetime
    end: datetime
    used: int


def take(windows: dict[str, Window], charges_: Sequence[Charge], messages: int, at: datetime) -> Overrun | None:
    """Count ``messages`` against every budget in ``charges_`` at ``at``, all or none: ``windows`` (by key) is
    updated in place when every budget takes it, left as it was when one would overrun (that one is returned,
    the narrowest first). A window that has ended opens again with this send."""
    if (whole := too_big(list(charges_), messages)) is not None:
        return whole
    taken: dict[str, Window] = {}
    for charge in charges_:
        window = taken.get(charge.key) or windows.get(charge.key)
        if window is None or window.end <= at:
            taken[charge.key] = Window(at, at + charge.budget.per, messages)
        elif window.used + messages <= charge.budget.messages:
            taken[charge.key] = Window(window.start, window.end, window.used + messages)
        else:
            return Overrun(charge, window.used, messages, window.end)
    windows.update(taken)
    return None


def too_big(charges_: list[Charge], needed: int) -> Overrun | None:
    """The first budget smaller than the send itself: no window will ever take it."""
    for charge in charges_:
        if needed > charge.budget.messages:
            return Overrun(charge, 0, needed, None)
    return None


def usage_line(charge: Charge, usage: Usage | None, at: datetime) -> str:
    """``rule 'support' per user: 12 of 50 messages per 1h used, 38 left; refills in 22 minutes``."""
    if usage is None or usage.refills_at is None or usage.refills_at <= at:
        return f"{charge.name}: {charge.described}; nothing used"
    left = max(charge.budget.messages - usage.used, 0)
    refill = refill_words(usage.refills_at, at)
    return f"{charge.name}: {usage.used} of {charge.described} used, {left} left; refills {refill}"


def until(when: datetime, at: datetime) -> str:
    """``45 seconds``, ``22 minutes``, ``1 hour 5 minutes``, ``2 days 3 hours``: how long from ``at`` to ``when``
    (rounded up to the minute; two units at most)."""
    seconds = math.ceil(max((when - at).total_seconds(), 0))
    if seconds < 60:
        return _count(seconds, "second")
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return _count(minutes, "minute")
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return _count(hours, "hour") + (f" {_count(minutes, 'minute')}" if minutes else "")
    days, hours = divmod(hours, 24)
    return _count(days, "day") + (f" {_count(hours, 'hour')}" if hours else "")


def refill_words(refills_at: datetime, at: datetime) -> str:
    """``in 22 minutes (14:05 UTC)``; the date too when it is not ``at``'s day."""
    stamp = f"{refills_at:%H:%M} UTC" if refills_at.date() == at.date() else f"{refills_at:%Y-%m-%d %H:%M} UTC"
    return f"in {until(refills_at, at)} ({stamp})"


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}{'s' if n != 1 else ''}"


def overrun_reason(overrun: Overrun, cost: str, refill: str, alert: bool = False) -> str:
    """Why a send was refused for a budget: which one, what is left, what the send costs, when it refills (``refill``
    says when in the reader's words: "in 22 minutes (14:05 UTC)")."""
    charge = overrun.charge
    if overrun.refills_at is None:
        fix = "raise the rule's limits or text fewer phones" if alert else "send to fewer people or a shorter text"
        return f"this costs {cost}, more than {charge.name} allows at all ({charge.described}): {fix}"
    left = f"{_count(overrun.left, 'message')} left"
    return f"{charge.name} ({charge.described}) has {left} and this costs {cost}; it refills {refill}"
