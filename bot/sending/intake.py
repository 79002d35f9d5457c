"""Intake: an intent is kept before Slack is answered, then the outbox is woken for it.

The database gets a deadline well inside Slack's 3 s: after it, the person is told nothing was recorded and
nothing will be sent. An insert that was already on its way may still land later (a network that dropped packets
delivers them when it comes back). So, with a ``recorder`` (replicas on PostgreSQL), an intent recorded for a
person is this process's alone (``recorded_by``) until it confirms, after the deadline was met, that the person was
told "recorded": another replica never claims one whose sender was told "not recorded". This process refuses its
own late ones (it remembers their keys), and an intent whose recorder stopped before confirming it is refused by
whichever replica takes it once ``RECORDER_GONE`` has passed: its sender may have been told "not recorded", so "not
sent" is the only safe outcome. (SQLite's single process needs no recorder: an insert is made only for a caller
still waiting, ``Database.insert_once``.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from bot.domain.errors import kind_of
from bot.domain.models import SendRequest
from bot.domain.ports import SendQueue
from bot.domain.retry import RetryPolicy
from bot.domain.sends import RECORDER_GONE, SendRecord
from bot.sending import texts

log = logging.getLogger("bot.sending")

DEADLINE = 2.0  # seconds the database gets before an ack says "not recorded" (Slack gives up at 3 s)
REMEMBERED = 10_000  # abandoned keys kept (an outage's worth of them)
# Confirming an intent while the database does not take it: 0.2 s doubling to 5 s, until RECORDER_GONE (then any
# replica may refuse it, and confirming it could only race that refusal).
CONFIRM_RETRY = RetryPolicy(base_delay=0.2, max_delay=5.0, max_attempts=None, max_retry_after=None, jitter=True)

Spawn = Callable[[Coroutine[Any, Any, None], str], object]


class NotRecorded(Exception):
    """The intent could not be kept in time; nothing will be sent."""


@dataclass(eq=False)
class Intake:
    """What every surface calls before its ack: the intent is durable once ``record`` returns."""

    sends: SendQueue
    deadline: timedelta  # safe failures are retried until this long after the request
    wake: Callable[[], None]  # the outbox looks at once
    within: float = DEADLINE
    # This process's outbox worker: a person's intent is its alone until confirmed (None: every intent is anyone's
    # at once: SQLite's one process, and tests).
    recorder: str | None = None
    # Where the confirmation runs after the ack (the app's background tasks); None: before ``record`` returns.
    spawn: Spawn | None = None
    _abandoned: OrderedDict[str, None] = field(default_factory=OrderedDict, init=False)

    async def record(self, request: SendRequest) -> SendRecord | None:
        """Keep the intent; None when this delivery was kept before (Slack retried it). ``NotRecorded`` when the
        database did not keep it in time: then nothing will be sent."""
        request = _clean(request)
        began = time.monotonic()
        # A person is told "not recorded"; an alert's event and a workflow step are delivered again by Slack.
        for_a_person = request.alert is None and request.step is None
        recorder = self.recorder if for_a_person else None
        try:
            async with asyncio.timeout(self.within):
                record = await self.sends.record(request, self.deadline, recorder=recorder)
        except Exception as exc:
            if for_a_person:
                self._abandon(request.idempotency_key)
            log.error("intent not recorded key=%s (%s)", request.idempotency_key, kind_of(exc))
            raise NotRecorded(kind_of(exc)) from None
        if record is None:
            log.info("duplicate delivery ignored key=%s", request.idempotency_key)
            return None
        if record.recorded_by is not None:  # kept in time: its sender is told "recorded"
            if self.spawn is None:  # within what is left of the deadline: the ack waits for it
                await self._confirm(record, within=self.within - (time.monotonic() - began))
            else:
                self.spawn(self._confirm(record), f"confirm-{record.id}")
        self.wake()
        return record

    def abandoned(self, record: SendRecord) -> str | None:
        """Why it must not be sent: its sender was told it was not recorded (its row appeared later), or its
        recorder stopped before confirming it (its sender may have been told so). None: it may be sent."""
        if record.request.idempotency_key in self._abandoned:
            return texts.database_did_not_answer()
        if record.recorded_by is not None and record.recorded_by != self.recorder:
            return texts.recorder_stopped()
        return None

    async def _confirm(self, record: SendRecord, within: float = RECORDER_GONE.total_seconds()) -> None:
        """Let any replica claim it, trying again while the database does not take it, for ``within`` seconds."""
        until = time.monotonic() + within
        attempt = 0
        while True:
            try:
                async with asyncio.timeout(max(0.0, until - time.monotonic())):
                    await self.sends.confirm(record)
                return
            except Exception as exc:
                attempt += 1
                delay = CONFIRM_RETRY.wait(attempt)
                if time.monotonic() + delay >= until:
                    # Only this process may send it, which it does; if it stops first, it is refused, and told.
                    log.warning("could not confirm send_id=%s (%s); it stays this process's", record.id, kind_of(exc))
                    return
                await asyncio.sleep(delay)

    def _abandon(self, key: str) -> None:
        self._abandoned[key] = None
        while len(self._abandoned) > REMEMBERED:
            self._abandoned.popitem(last=False)


def _clean(request: SendRequest) -> SendRequest:
    """Without NUL characters, which PostgreSQL refuses in text and no phone can show (a template's values too)."""
    template = request.template
    if template is not None and any("\x00" in v for v in template.values):
        values = tuple(v.replace("\x00", "") for v in template.values)
        request = replace(request, template=replace(template, values=values))
    if "\x00" not in request.text:
        return request
    return replace(request, text=request.text.replace("\x00", ""))
