"""What a person's App Home shows, gathered from the policy and the stores (the Slack side renders it).

"What you can send" comes from the same policy functions the bot decides with (``rules_for``, ``rule_templates``,
``budgets_of``), not from a second copy of the rules. "Your recent sends" reads the send log, the recipients'
statuses and the phones' replies. Admins (``admins:`` in the policy) also see the relay: the D7 balance, today's
sends by channel and outcome, what needs a person, the policy file, the alert rules' activity and the opt-out list.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from typing import Any

from bot.domain.alerts import AlertActivity
from bot.domain.budgets import Charge, Usage, budgets_of
from bot.domain.clock import Clock, utc_now
from bot.domain.delivery import RecipientDelivery
from bot.domain.errors import InputError
from bot.domain.inbound import OptOut
from bot.domain.oncall import Shift
from bot.domain.phone import PhoneNumber
from bot.domain.policy import WILDCARD, Policy, Rule, policy_warnings, rule_templates, rules_for
from bot.domain.ports import (
    BalanceView,
    BudgetLedger,
    DeliveryLog,
    Directory,
    InboundLog,
    OptOutList,
    PhoneVerifications,
    SendViews,
)
from bot.domain.sends import SendRecord, SendState
from bot.sending import texts
from bot.sending.admission import Admission
from bot.sending.oncall import OnCall, Timeline
from bot.sending.recipients import look_up_each, phone_of
from bot.sending.verifying import PHONE_UNREAD, PHONE_WITHIN, PhoneStatus, PhoneVerifying

log = logging.getLogger("bot.sending")

RECENT = 10  # sends shown under "Your recent sends"
NEED_A_PERSON = 10  # failures listed for admins
OPTED_OUT = 20  # opted-out phones listed for admins
REPLIES = 3  # replies shown under one send
LINKS_KEPT = 5_000  # thread permalinks remembered (they never change)
COVERAGE = timedelta(days=7)  # admins see each schedule's shifts this far ahead
ONCALL_WITHIN = 5.0  # seconds the on-call parts may take to read (Slack's look-ups): else a note, the rest shown


@dataclass(frozen=True)
class RuleView:
    """One rule that admits the user: what it lets them send, and their budgets under it."""

    rule: Rule
    templates: tuple[str, ...]
    budgets: tuple[tuple[Charge, Usage | None], ...]  # the user's own budgets (per user, workspace)
    shared: tuple[Charge, ...]  # budgets shared with others (per channel: one per channel, not shown as used)


@dataclass(frozen=True)
class RecentSend:
    record: SendRecord
    statuses: tuple[RecipientDelivery, ...]
    link: str | None  # the thread, when the bot could post one
    replies: tuple[tuple[str, str], ...] = ()  # what its phones texted back, newest first: (E.164, text)


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
    opted_out: tuple[OptOut, ...] = ()  # the latest phones on the opt-out list
    coverage: tuple[Coverage, ...] = ()  # each schedule's coming week


@dataclass(frozen=True)
class YourShifts:
    """A schedule the person is on: their shift now (None: not on call) and their next one (None: not within the
    shifts looked at ahead)."""

    schedule: str
    now: Shift | None
    next: Shift | None


@dataclass(frozen=True)
class Gap:
    """A shift of the coming week that would text nobody: ``why`` in words (nobody on it, no usable phone, a phone
    not verified)."""

    shift: Shift
    why: str


@dataclass(frozen=True)
class Coverage:
    """A schedule's coming week for admins: its shifts, the gaps among them, and (``defaults.verified_phones``) the
    people on its rotation without a verified phone."""

    schedule: str
    shifts: tuple[Shift, ...]
    gaps: tuple[Gap, ...]
    unverified: tuple[str, ...] = ()
    unread: str | None = None  # its user group, when Slack did not give the members


@dataclass(frozen=True)
class HomePage:
    user_id: str
    rules: tuple[RuleView, ...]
    admins: tuple[str, ...]  # whom to ask (user and user group IDs)
    recent: tuple[RecentSend, ...]
    admin: AdminView | None = None
    problems: tuple[str, ...] = ()  # parts that could not be read just now
    shifts: tuple[YourShifts, ...] = ()  # the schedules the person is on (or on call for by an override)
    phone: PhoneStatus | None = None  # their profile phone and whether they verified it (``defaults.verified_phones``)


@dataclass(kw_only=True, eq=False)
class HomeDesk:
    """Builds ``HomePage`` for a user; one per process."""

    policy: Policy
    admission: Admission
    sends: SendViews
    reports: DeliveryLog
    directory: Directory
    budgets: BudgetLedger | None
    policy_file: str
    policy_loaded_at: datetime
    balance: BalanceView | None = None  # the D7 balance as last read (None: not shown)
    inbound: InboundLog | None = None  # what phones texted back (None: not shown)
    optouts: OptOutList | None = None  # the opt-out list (None: not shown)
    oncall: OnCall | None = None  # the policy's schedules (None: no on-call parts)
    verifications: PhoneVerifications | None = None  # phones verified (``defaults.verified_phones``)
    verifying: PhoneVerifying | None = None  # the person's own phone and its "Verify my phone" (None: not shown)
    clock: Clock = utc_now
    _links: dict[tuple[str, str], str] = field(default_factory=dict, init=False)  # permalinks never change

    async def page(self, user_id: str) -> HomePage:
        """Each part on its own: one that cannot be read (Slack or the database failing) is replaced by a note,
        and the rest is still shown."""
        problems: list[str] = []
        try:
            groups = await self.admission.user_groups(user_id)
        except Exception as exc:
            log.warning("home tab: user groups of %s not looked up (%s)", user_id, type(exc).__name__)
            problems.append(texts.home_groups_unknown())
            groups = frozenset()
        rules = rules_for(self.policy, user_id, None, groups)
        views = [await self._rule_view(rule, user_id) for rule in rules]
        recent: list[RecentSend] = []
        try:
            recent = await self._recent(user_id)
        except Exception as exc:
            log.warning("home tab: recent sends of %s not read (%s)", user_id, type(exc).__name__)
            problems.append(texts.home_recent_unread())
        timelines: list[Timeline] = []
        if self.oncall is not None and self.policy.schedules:
            try:
                async with asyncio.timeout(ONCALL_WITHIN):
                    timelines = await self.oncall.ahead(COVERAGE)
            except Exception as exc:
                log.warning("home tab: on-call of %s not read (%s)", user_id, type(exc).__name__)
                problems.append(texts.home_oncall_unread())
        admin = None
        try:
            if await self.admission.is_admin(user_id):
                admin = await self._admin()
                if timelines:
                    admin = replace(admin, coverage=tuple(await self._coverage(timelines)))
        except Exception as exc:
            log.warning("home tab: admin view for %s not built (%s)", user_id, type(exc).__name__)
            problems.append(texts.home_admin_unread())
        yours = tuple(your_shifts(timelines, user_id))
        phone = await self._phone(user_id, problems)
        return HomePage(
            user_id, tuple(views), tuple(self.policy.admins), tuple(recent), admin, tuple(problems), yours, phone
        )

    async def _phone(self, user_id: str, problems: list[str]) -> PhoneStatus | None:
        """The person's phone and whether they verified it, where phones must be verified."""
        if self.verifying is None or not self.policy.defaults.verified_phones:
            return None
        try:
            async with asyncio.timeout(PHONE_WITHIN):
                return await self.verifying.status(user_id)
        except Exception as exc:
            log.warning("home tab: the phone of %s not read (%s)", user_id, type(exc).__name__)
            problems.append(PHONE_UNREAD)
            return None

    async def _coverage(self, timelines: list[Timeline]) -> list[Coverage]:
        """Each schedule's coming week with its gaps: a shift with nobody, or whose person has no phone that
        could be texted (none in the profile, unusable, or not verified where phones must be)."""
        users = list(dict.fromkeys(u for t in timelines for s in t.shifts if (u := s.user_id) is not None))
        checking = self.policy.defaults.verified_phones and self.verifications is not None
        rotation = list(dict.fromkeys(p for t in timelines for p in t.people))
        async with asyncio.timeout(ONCALL_WITHIN):
            everyone = list(dict.fromkeys(users + (rotation if checking else [])))
            found = await look_up_each(everyone, self.directory.person)
            verified = await self.verifications.verified(everyone) if checking and self.verifications else {}
        region = self.policy.defaults.region
        why: dict[str, str | None] = {}
        for user_id, person in zip(everyone, found, strict=True):
            if isinstance(person, Exception):
                why[user_id] = texts.gap_unknown_person()
                continue
            try:
                phone = phone_of(person, region).e164
            except InputError:
                why[user_id] = texts.gap_no_phone()
                continue
            why[user_id] = texts.gap_not_verified() if checking and verified.get(user_id) != phone else None
        out = []
        for t in timelines:
            gaps: list[Gap] = []
            for shift in t.shifts:
                reason = texts.gap_nobody() if shift.user_id is None else why.get(shift.user_id)
                if reason is None:
                    continue
                last = gaps[-1] if gaps else None
                if last is not None and (last.shift.user_id, last.why, last.shift.ends) == (
                    shift.user_id,
                    reason,
                    shift.starts,
                ):  # one gap from its first shift to its last
                    gaps[-1] = Gap(replace(last.shift, ends=shift.ends), reason)
                else:
                    gaps.append(Gap(shift, reason))
            unverified = tuple(p for p in t.people if checking and why.get(p) == texts.gap_not_verified())
            out.append(Coverage(t.schedule, t.shifts, tuple(gaps), unverified, t.unread))
        return out

    async def _rule_view(self, rule: Rule, user_id: str) -> RuleView:
        one = rule.slack_channels[0] if len(rule.slack_channels) == 1 and rule.slack_channels[0] != WILDCARD else None
        label = f"<#{one}>" if one is not None else "each channel"
        charges = budgets_of(self.policy, rule.name, user_id, one or "", label, "your")
        # Per channel budgets are shown with what is used only where the rule has one channel to count.
        counted = [c for c in charges if one is not None or c.scope not in ("rule_per_channel", "per_channel")]
        shared = tuple(c for c in charges if c not in counted)
        usage: Mapping[str, Usage] = {}
        if self.budgets is not None and counted:
            try:
                usage = await self.budgets.usage([c.key for c in counted])
            except Exception as exc:  # shown without what is used
                log.warning("could not read budgets for the home tab (%s)", type(exc).__name__)
        templates = tuple(rule_templates(self.policy, rule))
        return RuleView(rule, templates, tuple((c, usage.get(c.key)) for c in counted), shared)

    async def _recent(self, user_id: str) -> list[RecentSend]:
        recent = []
        records = await self.sends.recent_of(user_id, RECENT)
        replies = await self.inbound.replies_to([r.id for r in records]) if self.inbound is not None else {}
        for record in records:
            statuses = await self.reports.statuses(record.id)
            texted = tuple((r.phone or "", r.text or "") for r in replies.get(record.id, [])[:REPLIES])
            recent.append(RecentSend(record, tuple(statuses), await self._link(record), texted))
        return recent

    async def _link(self, record: SendRecord) -> str | None:
        thread = record.placement.thread_ts or record.request.origin.thread_ts
        if thread is None or record.placement.private:
            return None
        key = (record.request.channel_id, thread)
        if key not in self._links:
            if len(self._links) >= LINKS_KEPT:
                self._links.clear()
            try:
                self._links[key] = await self.directory.permalink(*key)
            except Exception as exc:  # the send is shown without its link (and asked again next time)
                log.info("no permalink for %s (%s)", key, type(exc).__name__)
                return None
        return self._links[key]

    async def _admin(self) -> AdminView:
        """Counted by the database (a busy day is 100,000 sends: none of them is read here one by one)."""
        at = self.clock()
        since = datetime.combine(at.date(), time(0), tzinfo=at.tzinfo)
        by_channel: dict[str, Counter[str]] = {}
        for channel, state, count in await self.sends.counts_since(since):
            by_channel.setdefault(channel, Counter())[state] += count
        need: list[tuple[datetime, SendRecord, str]] = []
        for record in await self.sends.needing_a_person(since, NEED_A_PERSON):
            why = _needs_a_person(record)
            if why is not None:
                need.append((record.created_at, record, why))
        show = self.policy.defaults.show_numbers
        for send_id, failure, when in await self.reports.failures_since(since, NEED_A_PERSON):
            found = await self.sends.get(send_id)
            if found is not None:
                shown = PhoneNumber(failure.recipient).display(show)
                need.append((when, found, texts.not_delivered_to(shown, failure.status)))
        need.sort(key=lambda n: n[0], reverse=True)
        activity = {a.rule: a for a in await self.sends.alert_activity(since)}
        return AdminView(
            balance=self.balance.health() if self.balance is not None else None,
            since=since,
            by_channel=by_channel,
            need_a_person=tuple((record, why) for _, record, why in need[:NEED_A_PERSON]),
            policy_file=self.policy_file,
            policy_loaded_at=self.policy_loaded_at,
            warnings=tuple(str(w) for w in policy_warnings(self.policy)),
            alerts=tuple(
                activity.get(rule.name, AlertActivity(rule.name, None, 0, 0, 0, 0)) for rule in self.policy.alerts
            ),
            opted_out=tuple(await self.optouts.listing(OPTED_OUT)) if self.optouts is not None else (),
        )


def _needs_a_person(record: SendRecord) -> str | None:
    """Why a person should look at this send: its outcome is unknown, or D7 refused or failed it."""
    if record.state is SendState.UNKNOWN:
        return texts.outcome_unknown()
    if record.state is SendState.REJECTED:
        return texts.rejected_by_d7()
    if record.state is SendState.FAILED:
        error = record.outcome.error if record.outcome is not None else None
        return texts.d7_failed_it(error.kind if error is not None else None)
    return None


def your_shifts(timelines: list[Timeline], user_id: str) -> list[YourShifts]:
    """The schedules ``user_id`` is on (on the rotation, or on call now by an override): their shift now, if any,
    and their next one among the shifts looked at."""
    out = []
    for t in timelines:
        mine = [s for s in t.shifts if s.user_id == user_id]
        if user_id not in t.people and not mine:
            continue
        now = t.shifts[0] if t.shifts and t.shifts[0].user_id == user_id else None
        later = [s for s in mine if s is not now and (now is None or s.starts >= now.ends)]
        out.append(YourShifts(t.schedule, now, later[0] if later else None))
    return out
