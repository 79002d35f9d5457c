"""Handoffs: at each change of who is on call for a schedule with ``notify`` or ``usergroup`` (the rotation's
handoff, an override taken, given or ended), the incoming person is told privately ("you are on call for db-primary
until Mon 09:00") and the schedule's Slack user group is set to them, so ``@db-oncall`` reaches them too.

Each stint (a person on call until a moment) is noticed once, by whichever replica claims it first (kept in the
database, so a restart does not tell anyone twice); what Slack refused is tried again, backing off, until the
stint ends. The watcher wakes at the next handoff, when this process keeps an override, and at least every
``POLL`` seconds (an override kept by another replica, a user group's members changed).

``async with watcher:`` runs it; leaving stops it (a notice in flight is let go: its claim runs out and another
replica, or the next start, finishes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol, Self

from bot.domain.clock import Clock, utc_now
from bot.domain.oncall import Handoff, Shift
from bot.domain.policy import Policy
from bot.domain.ports import OnCallHandoffs
from bot.sending.oncall import OnCall
from bot.tasks import BackgroundLoop

log = logging.getLogger("bot.oncall")

POLL = 60.0  # seconds between looks when no handoff is nearer (user groups' members are cached as long)
LEASE = timedelta(seconds=30)  # a claim another replica may take over once it ran out
ROUND_WITHIN = 30.0  # seconds one round may take in all (Slack and the database each have shorter deadlines)
RETRY_FIRST = timedelta(seconds=30)  # what Slack refused is tried again after this, doubling …
RETRY_MOST = timedelta(minutes=10)  # … up to this
SOON = 0.05  # seconds: the least a wait lasts (a handoff that is due now)


class HandoffNotices(Protocol):
    """What a handoff does in Slack."""

    async def tell(self, schedule: str, shift: Shift) -> None:
        """Tell ``shift.user_id`` privately that they are on call for ``schedule`` until ``shift.ends``."""
        ...

    async def set_group(self, usergroup: str, user_id: str) -> None:
        """Make ``user_id`` the only member of ``usergroup``."""
        ...


class HandoffWatcher(BackgroundLoop):
    """Notices each schedule's handoffs (only schedules with ``notify`` or ``usergroup``)."""

    def __init__(
        self,
        policy: Policy,
        oncall: OnCall,
        handoffs: OnCallHandoffs,
        notices: HandoffNotices,
        clock: Clock = utc_now,
        poll: float = POLL,
    ) -> None:
        self.policy = policy
        self.oncall = oncall
        self.handoffs = handoffs
        self.notices = notices
        self.clock = clock
        self.poll = poll
        self.watched = [name for name, schedule in policy.schedules.items() if schedule.watched]

    async def __aenter__(self) -> Self:
        if self.watched:
            self.start(self._loop(), "oncall-handoffs")
        return self

    async def _loop(self) -> None:
        while True:
            wait = self.poll
            try:
                async with asyncio.timeout(ROUND_WITHIN):
                    wait = await self.round()
            except Exception as exc:  # the database or Slack failed as a whole: looked at again after a while
                log.warning("on-call handoffs not looked at (%s); again in %.0f s", type(exc).__name__, self.poll)
            self.oncall.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(SOON, min(wait, self.poll))):
                    await self.oncall.changed.wait()

    async def round(self) -> float:
        """Notice every watched schedule's stint now; seconds until the nearest handoff (or retry) after now."""
        at = self.clock()
        nearest = at + timedelta(seconds=self.poll)
        for name in self.watched:
            try:
                shift = await self.oncall.shift(name, at)
            except Exception as exc:  # this schedule's user group did not answer: the others go on
                log.warning("on-call of %s not read for its handoff (%s)", name, type(exc).__name__)
                continue
            nearest = min(nearest, shift.ends)
            if shift.user_id is None:
                continue
            handoff = await self.handoffs.claim(name, shift, at, LEASE)
            if handoff is not None:
                retry = await self._notice(name, shift, handoff, at)
                if retry is not None:
                    nearest = min(nearest, retry)
        return max(0.0, (nearest - self.clock()).total_seconds())

    async def _notice(self, name: str, shift: Shift, handoff: Handoff, at: datetime) -> datetime | None:
        """Do what is left of ``handoff``; when Slack refused part of it, when to try again (None: all done)."""
        schedule = self.policy.schedules[name]
        noticed, group_set = handoff.noticed, handoff.group_set
        # Whoever took it themselves was just answered so: no DM for that.
        if not noticed and (not schedule.notify or (shift.override is not None and shift.override.by == shift.user_id)):
            noticed = True
        if schedule.usergroup is None:
            group_set = True
        if not noticed:
            noticed = await self._try(self.notices.tell(name, shift), f"the handoff DM of {name}")
        if not group_set and schedule.usergroup is not None:
            group_set = await self._try(
                self.notices.set_group(schedule.usergroup, handoff.user_id), f"user group {schedule.usergroup}"
            )
        done = noticed and group_set
        attempts = handoff.attempts if done else handoff.attempts + 1
        retry = None if done else at + min(RETRY_MOST, RETRY_FIRST * 2 ** min(attempts - 1, 10))
        await self.handoffs.keep(replace(handoff, noticed=noticed, group_set=group_set, attempts=attempts), retry)
        if done:
            log.info("on-call handoff of %s to %s noticed", name, handoff.user_id)
        return retry

    @staticmethod
    async def _try(call: Awaitable[None], what: str) -> bool:
        try:
            await call
        except Exception as exc:  # Slack refused or did not answer: tried again later
            log.warning("%s failed (%s: %s): tried again later", what, type(exc).__name__, str(exc)[:200])
            return False
        return True
