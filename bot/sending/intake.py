"""Intake: an intent is kept before Slack is answered, then the outbox is woken for it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from bot.domain.models import SendRequest
from bot.domain.ports import SendStore
from bot.domain.sends import SendRecord

log = logging.getLogger("bot.sending")


@dataclass(frozen=True, eq=False)
class Intake:
    """What every surface calls before its ack: the intent is durable once ``record`` returns."""

    sends: SendStore
    deadline: timedelta  # safe failures are retried until this long after the request
    wake: Callable[[], None]  # the outbox looks at once

    async def record(self, request: SendRequest) -> SendRecord | None:
        """Keep the intent; None when this delivery was kept before (Slack retried it). Raises when the database
        cannot keep it: then nothing will be sent."""
        record = await self.sends.record(request, self.deadline)
        if record is None:
            log.info("duplicate delivery ignored key=%s", request.idempotency_key)
            return None
        self.wake()
        return record
