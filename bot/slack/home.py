"""The App Home tab: a ``HomePage`` as Block Kit (within Slack's limits at any policy size), and ``HomeTabs``,
which publishes it when a person opens the tab and after their sends change (at most once per ``EVERY`` seconds
per person)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.policy import Policy
from bot.domain.ports import SettingsStore
from bot.sending.home import HomeDesk, HomePage
from bot.slack import messages, verify
from bot.slack.messages import Block, context, section
from bot.tasks import BackgroundTasks

log = logging.getLogger("bot.slack")

SEND_BUTTON = "home_send_text"  # opens the compose form, like the "Send a text" shortcut
RULES_SHOWN = 25  # rule sections; the rest are counted (a view holds 100 blocks)
EVERY = 5.0  # seconds: at most one views.publish per person this often
SEEN_KEPT = 50_000  # people remembered in memory (the database remembers the rest)


def home_view(page: HomePage, policy: Policy) -> dict[str, Any]:
    """The Home tab for ``page``; at most 100 blocks, every text within its limit, whatever the policy's size."""
    show = policy.defaults.show_numbers
    blocks: list[Block] = [{"type": "header", "text": {"type": "plain_text", "text": messages.HOME_TITLE}}]
    if page.problems:
        blocks.append(context(messages.home_problems(page.problems)))
    if page.shifts:
        blocks.append(section(messages.home_your_shifts(page.shifts)))
    if page.phone is not None:
        blocks += verify.home_blocks(page.phone, show)
    blocks.append(section(messages.HOME_WHAT_YOU_CAN_SEND))
    if not page.rules:
        blocks.append(section(messages.home_nothing_allowed(page.admins)))
    for view in page.rules[:RULES_SHOWN]:
        blocks.append(section(messages.home_rule(policy, view)))
    if len(page.rules) > RULES_SHOWN:
        blocks.append(context(messages.home_more_rules(len(page.rules) - RULES_SHOWN)))
    blocks.append({"type": "divider"})
    blocks.append(
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": messages.HOME_RECENT},
            "accessory": {
                "type": "button",
                "action_id": SEND_BUTTON,
                "text": {"type": "plain_text", "text": messages.HOME_SEND_BUTTON},
            },
        }
    )
    if not page.recent:
        blocks.append(context(messages.HOME_NOTHING_SENT))
    for recent in page.recent:
        blocks.append(section(messages.home_recent(recent, show)))
    if page.admin is not None:
        blocks.append({"type": "divider"})
        blocks.append({"type": "header", "text": {"type": "plain_text", "text": messages.HOME_ADMINS}})
        blocks += [section(text) for text in messages.home_admin(page.admin, show)]
        if page.admin.coverage:
            blocks += [section(text) for text in messages.home_coverage(page.admin.coverage)]
    return {"type": "home", "blocks": blocks[:100]}


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
