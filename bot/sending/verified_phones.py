"""Verified phones in sends (``defaults.verified_phones``): what ``Recipients`` asks before it texts a phone taken
from a Slack profile, the words of the problem when its owner has not verified it, and the private note that tells
them how (at most once per ``REMIND_EVERY`` per person, whatever the number of alerts that skip them)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

from bot.domain.clock import Clock, utc_now
from bot.domain.errors import inert
from bot.domain.ports import PhoneVerifications, VerifyNotes
from bot.domain.verification import REMIND_EVERY

log = logging.getLogger("bot.sending")

# Runs a coroutine in the background, tracked until it ends (``BackgroundTasks.spawn``).
Spawn = Callable[[Coroutine[Any, Any, None], str], object]
REMEMBERED = 50_000  # people this process remembers telling (the database remembers the rest)


def refused_words(name: str) -> str:
    """A request that named the person (``/sms @alice``) is refused in these words."""
    return f"@{inert(name)}'s phone is not verified: they can verify it from the app's Home tab"


def left_out_words(name: str) -> str:
    """A user group's member or a schedule's person left out of a send (its thread says so)."""
    return f"@{inert(name)} not reached: phone not verified (they can verify it from the app's Home tab)"


class Reminders:
    """Tells people privately how to verify their phone, at most once per ``every`` each, and never makes a send
    wait for it (the note goes in the background). The database decides who is told (replicas never double a note);
    this process remembers whom it asked about, so an alert storm costs no write per alert."""

    def __init__(
        self,
        store: PhoneVerifications,
        notes: VerifyNotes,
        spawn: Spawn,
        *,
        clock: Clock = utc_now,
        every: float = REMIND_EVERY.total_seconds(),
    ) -> None:
        self._store = store
        self._notes = notes
        self._spawn = spawn
        self._clock = clock
        self._every = every
        self._asked: dict[str, float] = {}  # user → when this process last asked the database (monotonic)

    def remind(self, user_ids: Iterable[str]) -> None:
        now = time.monotonic()
        for user_id in dict.fromkeys(user_ids):
            asked = self._asked.get(user_id)
            if asked is not None and now - asked < self._every:
                continue
            if len(self._asked) >= REMEMBERED:
                self._asked.clear()
            self._asked[user_id] = now
            self._spawn(self._remind(user_id), "verify-reminder")

    async def _remind(self, user_id: str) -> None:
        try:
            if not await self._store.take_reminder(user_id, self._clock(), REMIND_EVERY):
                return  # told within the hour (here or by another replica)
        except Exception as exc:  # asked again at the next send that skips them
            self._asked.pop(user_id, None)
            log.warning("could not read when %s was last told to verify (%s)", user_id, type(exc).__name__)
            return
        try:
            await self._notes.how_to_verify(user_id)
        except Exception as exc:  # counted as told: the next note comes within the hour's limit anyway
            log.warning("could not tell %s how to verify their phone (%s)", user_id, type(exc).__name__)


class VerifiedPhones:
    """What ``Recipients`` asks with ``defaults.verified_phones`` on: who verified which phone, and whom to tell."""

    def __init__(self, store: PhoneVerifications, reminders: Reminders | None = None) -> None:
        self.store = store
        self.reminders = reminders  # None: nobody is told (tests of the check alone)

    async def verified(self, user_ids: Sequence[str]) -> dict[str, str]:
        return await self.store.verified(user_ids)

    def remind(self, user_ids: Iterable[str]) -> None:
        if self.reminders is not None:
            self.reminders.remind(user_ids)
