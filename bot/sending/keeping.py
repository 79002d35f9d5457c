"""What the pipeline holds on to when a dependency fails: D7's answer until it is written, and which sends are only
waiting between two D7 attempts (so that a shutdown can put them back to ``pending`` instead of ``unknown``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.domain.errors import D7Error, kind_of
from bot.domain.retry import RetryPolicy
from bot.domain.sends import LeaseLost, SendRecord

log = logging.getLogger("bot.sending")

# Writing D7's answer (or a deferral) while the database does not take it: 0.2 s doubling to 5 s, until written.
KEEP_RETRY = RetryPolicy(base_delay=0.2, max_delay=5.0, max_attempts=None, max_retry_after=None, jitter=True)
# A send is "asleep" between two D7 attempts only while this much of its wait is left: near the end the client may
# already be making the next request, and cancelling then could lose an answer.
ASLEEP_MARGIN = 1.0


async def keep(what: str, record: SendRecord, write: Callable[[], Awaitable[SendRecord]]) -> SendRecord:
    """``write()`` until it works: it carries something that cannot be asked again (D7's answer). Another worker
    taking the intent over (``LeaseLost``) ends it; a shutdown cancels it (logged with what was lost)."""
    attempt = 0
    while True:
        try:
            return await write()
        except LeaseLost:
            raise
        except asyncio.CancelledError:
            log.error("stopped before %s of send_id=%s was written: it will read 'unknown'", what, record.id)
            raise
        except Exception as exc:
            attempt += 1
            if attempt == 1:  # once per send, not once per try
                log.error(
                    "could not write %s of send_id=%s (%s); keeping it and trying again", what, record.id, kind_of(exc)
                )
            await asyncio.sleep(KEEP_RETRY.wait(attempt))


@dataclass(frozen=True)
class Wait:
    """A send between two D7 attempts: the client sleeps until ``until`` (monotonic) before trying again."""

    until: float
    error: D7Error

    def asleep(self) -> bool:
        return time.monotonic() < self.until - ASLEEP_MARGIN

    @property
    def left(self) -> float:
        return max(0.0, self.until - time.monotonic())


@dataclass
class Waits:
    """Sends waiting between D7 attempts, by send id."""

    _waits: dict[str, Wait] = field(default_factory=dict)

    def start(self, send_id: str, delay: float, error: D7Error) -> None:
        self._waits[send_id] = Wait(time.monotonic() + delay, error)

    def end(self, send_id: str) -> Wait | None:
        return self._waits.pop(send_id, None)

    def asleep(self) -> list[str]:
        """Sends that are certainly not talking to D7 now: stopping them loses nothing."""
        return [send_id for send_id, wait in self._waits.items() if wait.asleep()]
