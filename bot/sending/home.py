"""What a person's App Home shows, gathered from the policy and the stores (the Slack side renders it).

"What you can send" comes from the same policy functions the bot decides with (``rules_for``, ``rule_templates``,
``budgets_of``), not from a second copy of the rules. "Your recent sends" reads the send log and the recipients'
statuses. Admins (``admins:`` in the policy) also see the relay: the D7 balance, today's sends by channel and
outcome, what needs a person, the policy file, and the alert rules' activity.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any

from bot.domain.budgets import Charge, Usage, budgets_of
from bot.domain.clock import Clock, utc_now
from bot.domain.delivery import RecipientDelivery
from bot.domain.models import Via
from bot.domain.phone import PhoneNumber
from bot.domain.policy import Policy, Rule, policy_warnings, rule_templates, rules_for
from bot.domain.ports import BudgetLedger, DeliveryLog, Directory, SendStore
from bot.domain.sends import SendRecord, SendState
from bot.sending.admission import Admission

log = logging.getLogger("bot.sending")

RECENT = 10  # sends shown under "Your recent sends"
NEED_A_PERSON = 10  # failures listed for admins


@dataclass(frozen=True)
class RuleView:
    """One rule that admits the user: what it lets them send, and their budgets under it."""

    rule: Rule
    vias: tuple[Via, ...]
    templates: tuple[str, ...]
    budgets: tuple[tuple[Charge, Usage | None], ...]  # the user's own budgets (per user, workspace)
    shared: tuple[Charge, ...]  # budgets shared with others (per channel: one per channel, not shown as used)


@dataclass(frozen=True)
class RecentSend:
    record: SendRecord
    statuses: tuple[RecipientDelivery, ...]
    link: str | None  # the thread, when the bot could post one


@dataclass(frozen=True)
class AlertActivity:
    rule: str
    last_match: datetime | None
    texted: int
    held: int  # held back by a per-phone limit (in a summary instead)
    repeats: int  # not texted again within the dedupe window
    refused: int


@dataclass(frozen=True)
class AdminView:
    balance: Mapping[str, Any] | None
    since: datetime  # "today": midnight UTC
    by_channel: Mapping[str, Counter[str]]  # channel → outcome → sends
    need_a_person: tuple[tuple[SendRecord, str], ...]  # the send and why (unknown, rejected, not delivered…)
    policy_file: str
    policy_loaded_at: datetime
    warnings: tuple[str, ...]
    alerts: tuple[AlertActivity, ...]


@dataclass(frozen=True)
class HomePage:
    user_id: str
    rules: tuple[RuleView, ...]
    admins: tuple[str, ...]  # whom to ask (user and user group IDs)
    recent: tuple[RecentSend, ...]
    admin: AdminView | None = None


def _nobody_knows() -> Mapping[str, Any] | None:
    return None


@dataclass(kw_only=True, eq=False)
class HomeDesk:
    """Builds ``HomePage`` for a user; one per process."""

    policy: Policy
    admission: Admission
    sends: SendStore
    reports: DeliveryLog
    directory: Directory
    budgets: BudgetLedger | None
    policy_file: str
    policy_loaded_at: datetime
    balance: Callable[[], Mapping[str, Any] | None] = _nobody_knows
    clock: Clock = utc_now
    _links: dict[tuple[str, str], str] = field(default_factory=dict, init=False)  # permalinks never change

    async def page(self, user_id: str) -> HomePage:
        groups = await self.admission.user_groups(user_id)
        rules = rules_for(self.policy, user_id, None, groups)
        views = [await self._rule_view(rule, user_id) for rule in rules]
        recent = await self._recent(user_id)
        admin = await self._admin() if await self.admission.is_admin(user_id) else None
        return HomePage(user_id, tuple(views), tuple(self.policy.admins), tuple(recent), admin)

    async def _rule_view(self, rule: Rule, user_id: str) -> RuleView:
        vias = tuple(dict.fromkeys(self.policy.senders[s].via for s in rule.senders))
        channel = rule.slack_channels[0]
        charges = budgets_of(self.policy, rule.name, user_id, channel, "a channel", "your")
        own = [c for c in charges if c.scope in ("rule_per_user", "per_user", "workspace")]
        shared = tuple(c for c in charges if c.scope in ("rule_per_channel", "per_channel"))
        usage: Mapping[str, Usage] = {}
        if self.budgets is not None and own:
            try:
                usage = await self.budgets.usage([c.key for c in own])
            except Exception as exc:  # shown without what is used
                log.warning("could not read budgets for the home tab (%s)", type(exc).__name__)
        templates = tuple(rule_templates(self.policy, rule))
        return RuleView(rule, vias, templates, tuple((c, usage.get(c.key)) for c in own), shared)

    async def _recent(self, user_id: str) -> list[RecentSend]:
        recent = []
        for record in await self.sends.recent_of(user_id, RECENT):
            statuses = await self.reports.statuses(record.id)
            recent.append(RecentSend(record, tuple(statuses), await self._link(record)))
        return recent

    async def _link(self, record: SendRecord) -> str | None:
        thread = record.placement.thread_ts or record.request.origin.thread_ts
        if thread is None or record.placement.private:
            return None
        key = (record.request.channel_id, thread)
        if key not in self._links:
            try:
                self._links[key] = await self.directory.permalink(*key)
            except Exception as exc:  # the send is shown without its link
                log.info("no permalink for %s (%s)", key, type(exc).__name__)
                return None
        return self._links[key]

    async def _admin(self) -> AdminView:
        at = self.clock()
        since = datetime.combine(at.date(), time(0), tzinfo=at.tzinfo)
        today = await self.sends.audit(since)
        by_channel: dict[str, Counter[str]] = {}
        for record in today:
            if record.request.origin.surface == "summary":
                continue
            by_channel.setdefault(record.request.channel_id, Counter())[record.state.value] += 1
        need: list[tuple[SendRecord, str]] = []
        for record in reversed(today):
            why = _needs_a_person(record)
            if why is not None:
                need.append((record, why))
        failures = await self.reports.failures_since(since)
        known = {r.id: r for r in today}
        for send_id, failure in failures:
            found = known.get(send_id) or await self.sends.get(send_id)
            if found is not None:
                shown = PhoneNumber(failure.recipient).display(self.policy.defaults.show_numbers)
                need.append((found, f"not delivered to {shown}: {failure.status}"))
        return AdminView(
            balance=self.balance(),
            since=since,
            by_channel=by_channel,
            need_a_person=tuple(need[:NEED_A_PERSON]),
            policy_file=self.policy_file,
            policy_loaded_at=self.policy_loaded_at,
            warnings=tuple(str(w) for w in policy_warnings(self.policy)),
            alerts=tuple(_alert_activity(self.policy, today)),
        )


def _needs_a_person(record: SendRecord) -> str | None:
    """Why a person should look at this send: its outcome is unknown, or D7 refused or failed it."""
    if record.state is SendState.UNKNOWN:
        return "outcome unknown: D7 may or may not have sent it"
    if record.state is SendState.REJECTED:
        return "rejected by D7"
    if record.state is SendState.FAILED:
        error = record.outcome.error if record.outcome is not None else None
        return "D7 failed it" + (f" ({error.kind})" if error is not None else "")
    return None


def _alert_activity(policy: Policy, today: list[SendRecord]) -> list[AlertActivity]:
    activity = []
    for rule in policy.alerts:
        mine = [r for r in today if r.request.alert is not None and r.request.alert.rule == rule.name]
        alerts = [r for r in mine if r.request.origin.surface != "summary"]
        states = Counter(r.state for r in alerts)
        held = sum(len(r.held) for r in alerts)
        activity.append(
            AlertActivity(
                rule=rule.name,
                last_match=max((r.created_at for r in alerts), default=None),
                texted=states[SendState.ACCEPTED],
                held=held,
                repeats=states[SendState.DEDUPLICATED],
                refused=states[SendState.DENIED] + states[SendState.REJECTED] + states[SendState.FAILED],
            )
        )
    return activity
