"""The App Home tab: a ``HomePage`` as Block Kit (within Slack's limits at any policy size), and ``HomeTabs``,
which publishes it when a person opens the tab and after their sends change (at most once per ``EVERY`` seconds
per person)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.budgets import describe_budget, usage_line
from bot.domain.clock import utc_now
from bot.domain.phone import NumberDisplay, PhoneNumber
from bot.domain.policy import GROUP_PREFIX, REGION_PREFIX, USERGROUP_ID, WILDCARD, Policy, Rule
from bot.domain.ports import SettingsStore
from bot.sending.home import AdminView, HomeDesk, HomePage, RecentSend, RuleView
from bot.slack.markup import escape
from bot.slack.messages import Block, context, delivery_text, fit, listing, section, shown_markup
from bot.tasks import BackgroundTasks

log = logging.getLogger("bot.slack")

SEND_BUTTON = "home_send_text"  # opens the compose form, like the "Send a text" shortcut
RULES_SHOWN = 25  # rule sections; the rest are counted (a view holds 100 blocks)
EVERY = 5.0  # seconds: at most one views.publish per person this often
SEEN_KEPT = 50_000  # people remembered in memory (the database remembers the rest)
RULE_TEXT = 2900  # characters of one rule's section (25 of them fit a view)
LINE = 400  # characters of one line inside it


def home_view(page: HomePage, policy: Policy) -> dict[str, Any]:
    """The Home tab for ``page``; at most 100 blocks, every text within its limit, whatever the policy's size."""
    show = policy.defaults.show_numbers
    blocks: list[Block] = [{"type": "header", "text": {"type": "plain_text", "text": "D7 Relay: texts from Slack"}}]
    if page.problems:
        blocks.append(context(":warning: " + "; ".join(page.problems) + ". Open the tab again in a moment."))
    blocks.append(section("*What you can send*"))
    if not page.rules:
        blocks.append(section(nothing_allowed(page.admins)))
    for view in page.rules[:RULES_SHOWN]:
        blocks.append(section(_rule_text(policy, view)))
    if len(page.rules) > RULES_SHOWN:
        more = len(page.rules) - RULES_SHOWN
        blocks.append(context(f"… and {more} more rules admit you; `python -m bot explain` decides any send."))
    blocks.append({"type": "divider"})
    blocks.append(
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "*Your recent sends*"},
            "accessory": {
                "type": "button",
                "action_id": SEND_BUTTON,
                "text": {"type": "plain_text", "text": "Send a text"},
            },
        }
    )
    if not page.recent:
        blocks.append(context("Nothing sent yet. `/sms`, `/whatsapp` or the button above."))
    for recent in page.recent:
        blocks.append(section(_recent_text(recent, show)))
    if page.admin is not None:
        blocks.append({"type": "divider"})
        blocks.append({"type": "header", "text": {"type": "plain_text", "text": "The relay (admins)"}})
        blocks += [section(text) for text in _admin_texts(page.admin, show)]
    return {"type": "home", "blocks": blocks[:100]}


def nothing_allowed(admins: Sequence[str]) -> str:
    """What a person no rule admits reads, and whom to ask."""
    if not admins:
        return "Nothing is allowed for you here yet: the bot's policy has no rule for you. Ask your Slack admins."
    who = ", ".join(f"<!subteam^{a}>" if USERGROUP_ID.match(a) else f"<@{a}>" for a in admins[:10])
    return f"Nothing is allowed for you here yet: no rule of the bot's policy admits you. Ask {who}."


def recipients_in_words(policy: Policy, rule: Rule, show: NumberDisplay) -> str:
    """``numbers in US, CA``, ``contact group oncall-db (2 numbers)``, ``numbers starting +44``, ``any number``."""
    words = []
    for pattern in rule.recipients:
        if pattern == WILDCARD:
            words.append("any number")
        elif pattern.startswith(REGION_PREFIX):
            words.append(f"numbers in {pattern.removeprefix(REGION_PREFIX).replace(',', ', ')}")
        elif pattern.startswith(GROUP_PREFIX):
            name = pattern.removeprefix(GROUP_PREFIX)
            count = len(policy.contacts.get(name, []))
            words.append(f"contact group {escape(name)} ({count} number{'s' if count != 1 else ''})")
        elif pattern.endswith(WILDCARD):
            prefix = pattern[:-1]
            if show is NumberDisplay.MASKED and len(prefix) > 5:  # a long prefix is most of a number
                prefix = prefix[:5] + "…"
            words.append(f"numbers starting {prefix}")
        else:
            words.append(PhoneNumber(pattern).display(show))
    return listing(words, LINE)


def _rule_text(policy: Policy, view: RuleView) -> str:
    rule = view.rule
    channels = (
        "any channel" if WILDCARD in rule.slack_channels else listing([f"<#{c}>" for c in rule.slack_channels], LINE)
    )
    senders = ", ".join(
        f"{policy.senders[s].via.label} as `{escape(s)}` ({escape(policy.senders[s].originator)})" for s in rule.senders
    )
    most = rule.max_recipients or policy.defaults.max_recipients
    lines = [
        f"*{escape(rule.name)}*",
        f"From {channels} · {fit(senders, LINE)}",
        f"To {recipients_in_words(policy, rule, policy.defaults.show_numbers)} · at most {most} per send",
    ]
    at = utc_now()
    budgets = [usage_line(charge, usage, at) for charge, usage in view.budgets]
    budgets += [
        f"{charge.name.replace('a channel', 'each channel')}: {describe_budget(charge.budget)}"
        for charge in view.shared
    ]
    if budgets:
        lines.append("Budgets: " + listing(budgets, 2 * LINE, sep="; "))
    if view.templates:
        lines.append("WhatsApp templates: " + listing([f"`{escape(t)}`" for t in view.templates], LINE))
    return fit("\n".join(lines), RULE_TEXT)


def _recent_text(recent: RecentSend, show: NumberDisplay) -> str:
    record = recent.record
    request = record.request
    stamp = f"{record.created_at:%Y-%m-%d %H:%M} UTC"
    when = f"<!date^{int(record.created_at.timestamp())}^{{date_short_pretty}} {{time}}|{stamp}>"
    where = "a direct message" if request.channel_id.startswith("D") else f"<#{request.channel_id}>"
    head = [where, when, request.via.label, f"*{record.state.value}*"]
    if record.request_id:
        head.append(f"request_id `{escape(record.request_id)}`")
    if recent.link:
        head.append(f"<{recent.link}|thread>")
    statuses = {s.recipient: s for s in recent.statuses}
    numbers = record.recipients or []
    people = []
    for number in numbers:
        shown = PhoneNumber(number).display(show)
        status = statuses.get(number)
        people.append(f"{shown}: {delivery_text(status.status, status.reason)}" if status else shown)
    lines = [" · ".join(head)]
    if people:
        lines.append(listing(people, 1200, sep="\n"))
    if record.refusal is not None:
        lines.append(fit("Not sent: " + "; ".join(shown_markup(p) for p in record.refusal.problems), 600))
    return fit("\n".join(lines), 2900)


def _admin_texts(admin: AdminView, show: NumberDisplay) -> list[str]:
    texts = []
    balance = admin.balance
    if balance is None:
        texts.append("*D7 balance:* not known (D7 does not offer it, or it was not read yet)")
    else:
        low = " · :warning: below the warning level" if balance.get("below_warning_level") else ""
        texts.append(
            f"*D7 balance:* {balance['amount']:.2f} {escape(str(balance.get('currency') or ''))} "
            f"(read {escape(str(balance['read_at']))}){low}"
        )
    since = f"{admin.since:%Y-%m-%d} (UTC)"
    if admin.by_channel:
        rows = []
        for channel, outcomes in sorted(admin.by_channel.items(), key=lambda kv: -sum(kv[1].values())):
            counts = ", ".join(f"{n} {state}" for state, n in outcomes.most_common())
            rows.append(f"<#{channel}>: {counts}")
        texts.append(f"*Sends on {since}:*\n" + listing(rows, 2500, sep="\n"))
    else:
        texts.append(f"*Sends on {since}:* none")
    if admin.need_a_person:
        rows = []
        for record, why in admin.need_a_person:
            ref = f"request_id `{escape(record.request_id)}`" if record.request_id else f"send `{record.id[:8]}`"
            rows.append(f"<#{record.request.channel_id}> · {ref} · <@{record.request.user_id}> · {escape(why)}")
        texts.append("*Needs a person:*\n" + listing(rows, 2500, sep="\n"))
    else:
        texts.append("*Needs a person:* nothing today")
    policy = (
        f"*Policy:* `{escape(admin.policy_file)}` loaded {admin.policy_loaded_at:%Y-%m-%d %H:%M} UTC · "
        f"`check`: {len(admin.warnings)} warning{'s' if len(admin.warnings) != 1 else ''}"
    )
    if admin.warnings:
        policy += "\n" + listing([escape(w) for w in admin.warnings], 2000, sep="\n")
    texts.append(policy)
    if admin.alerts:
        rows = []
        for a in admin.alerts:
            last = f"last match {a.last_match:%H:%M} UTC" if a.last_match else "no match today"
            rows.append(
                f"{escape(a.rule)}: {last} · {a.texted} texted · {a.held} held back · {a.repeats} repeats · "
                f"{a.refused} not texted"
            )
        texts.append("*Alert rules today:*\n" + listing(rows, 2500, sep="\n"))
    return [fit(t, 2900) for t in texts]


class HomeTabs:
    """Publishes people's Home tabs: when they open it, and (debounced) after their sends change.

    Who has opened their tab is kept in the database (``kv``), so the replica that tells a send's outcome
    refreshes the tab even when another replica saw it opened, and after a restart."""

    def __init__(
        self,
        client: AsyncWebClient,
        tasks: BackgroundTasks,
        every: float = EVERY,
        settings: SettingsStore | None = None,
        desk: HomeDesk | None = None,
    ) -> None:
        self.client = client
        self.tasks = tasks
        self.every = every
        self.settings = settings
        self.desk = desk  # what a tab shows (None: nothing is published)
        self.seen: set[str] = set()  # people known to have opened their tab
        self._last: dict[str, float] = {}
        self._pending: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    def opened(self, user_id: str) -> None:
        if user_id not in self.seen and self.settings is not None:
            self.tasks.spawn(self._remember(user_id), "home-opened")
        self._see(user_id)
        self._schedule(user_id)

    def changed(self, user_id: str) -> None:
        """A send of this person's changed: refresh their tab if they have looked at it (here or elsewhere)."""
        if user_id in self.seen:
            self._schedule(user_id)
        elif self.settings is not None:
            self.tasks.spawn(self._changed_elsewhere(user_id), "home-changed")

    async def _remember(self, user_id: str) -> None:
        assert self.settings is not None  # noqa: S101 - only spawned with settings
        await self.settings.put_once(_opened_key(user_id), "1")

    async def _changed_elsewhere(self, user_id: str) -> None:
        assert self.settings is not None  # noqa: S101 - only spawned with settings
        if await self.settings.get(_opened_key(user_id)) is not None:
            self._see(user_id)
            self._schedule(user_id)

    def _see(self, user_id: str) -> None:
        if len(self.seen) >= SEEN_KEPT:
            self.seen.clear()  # forgotten ones are read back from the database when their sends change
        self.seen.add(user_id)

    def _schedule(self, user_id: str) -> None:
        if user_id in self._pending:
            return  # one publish is on its way and will show this too
        self._pending.add(user_id)
        delay = max(0.0, self._last.get(user_id, -self.every) + self.every - time.monotonic())
        self.tasks.spawn(self._publish_after(user_id, delay), "home-tab")

    async def _publish_after(self, user_id: str, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            self._pending.discard(user_id)
        lock = self._locks.setdefault(user_id, asyncio.Lock())
        async with lock:  # one at a time per person: an older page never lands after a newer one
            self._last[user_id] = time.monotonic()
            await self.publish(user_id)
        if not lock.locked() and len(self._locks) > SEEN_KEPT:
            self._locks.clear()
            self._last.clear()

    async def publish(self, user_id: str) -> None:
        if self.desk is None:
            return
        page = await self.desk.page(user_id)
        try:
            await self.client.views_publish(user_id=user_id, view=home_view(page, self.desk.policy))
        except SlackApiError as exc:
            log.warning("could not publish the home tab of %s: %s", user_id, exc.response.get("error"))


def _opened_key(user_id: str) -> str:
    return f"home-opened:{user_id}"[:64]
