"""Intake: an intent is kept before Slack is answered, then the outbox is woken for it.

The database gets a deadline well inside Slack's 3 s: after it, the person is told nothing was recorded and
nothing will be sent. An insert that was already on its way may still land later (a network that dropped packets
delivers them when it comes back): its key is remembered as abandoned, and the outbox refuses such an intent
instead of sending a text its sender was told would not go.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta

from bot.domain.errors import kind_of
from bot.domain.models import SendRequest
from bot.domain.ports import SendQueue
from bot.domain.sends import SendRecord

log = logging.getLogger("bot.sending")

DEADLINE = 2.0  # seconds the database gets before an ack says "not recorded" (Slack gives up at 3 s)
REMEMBERED = 10_000  # abandoned keys kept (an outage's worth of them)


class NotRecorded(Exception):
    """The intent could not be kept in time; nothing will be sent."""


@dataclass(eq=False)
class Intake:
    """What every surface calls before its ack: the intent is durable once ``record`` returns."""

    sends: SendQueue
    deadline: timedelta  # safe failures are retried until this long after the request
    wake: Callable[[], None]  # the outbox looks at once
    within: float = DEADLINE
    _abandoned: OrderedDict[str, None] = field(default_factory=OrderedDict, init=False)

    async def record(self, request: SendRequest) -> SendRecord | None:
        """Keep the intent; None when this delivery was kept before (Slack retried it). ``NotRecorded`` when the
        database did not keep it in time: then nothing will be sent."""
        request = _clean(request)
        try:
            async with asyncio.timeout(self.within):
                record = await self.sends.record(request, self.deadline)
        except Exception as exc:
            # A person is told "not recorded"; an alert's event and a workflow step are delivered again by Slack.
            if request.alert is None and request.step is None:
                self._abandon(request.idempotency_key)
            log.error("intent not recorded key=%s (%s)", request.idempotency_key, kind_of(exc))
            raise NotRecorded(kind_of(exc)) from None
        if record is None:
            log.info("duplicate delivery ignored key=%s", request.idempotency_key)
            return None
        self.wake()
        return record

    def abandoned(self, request: SendRequest) -> bool:
        """Its sender was told it was not recorded: it must not be sent, even if its row appeared later."""
        return request.idempotency_key in self._abandoned

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
