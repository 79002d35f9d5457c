"""The inbox: ``POST /d7/inbound/<secret>`` keeps each body as it came and answers at once; a loop handles what was
kept, each message leased to one worker (as the outbox leases sends), each step kept before the next.

    pending ──decide──▶ unreadable | opted_out | opted_in | helped | unchanged | acknowledged | replied | inbox | kept
                           (kept before anything is done)
                              └──act──▶ handled          (``PhoneTexts.act``; tried again until it is done)

A decision is kept before it is acted on, so a crash or a failure on the way (Slack, the database) redoes only the
acting, which changes nothing twice. The same body again within ``DUPLICATE_WINDOW`` is kept as a duplicate and
not handled (D7 may post a callback more than once).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Self

from bot.domain.clock import Clock, utc_now
from bot.domain.errors import kind_of
from bot.domain.inbound import InboundRecord, Outcome
from bot.domain.ports import CannotTell, InboundLog
from bot.domain.retry import RetryPolicy
from bot.sending.phone_texts import PhoneTexts
from bot.tasks import BackgroundLoop

log = logging.getLogger("bot.inbound")

DUPLICATE_WINDOW = timedelta(minutes=10)  # the same body again this soon is a duplicate
MAX_BODY = 64 * 1024  # an inbound text is a few hundred bytes; anything past this is refused (413)
LEASE = timedelta(seconds=60)  # one worker handles a message at a time
HANDLE_WITHIN = 30.0  # seconds one message's handling may take (well inside its lease)
KEEP_WITHIN = 5.0  # seconds the database gets to keep a body (D7 waits for the answer) or a message's state
# Messages leased at once: one, so that a message is always handled within its own lease (HANDLE_WITHIN + keeping it
# < LEASE), however slow Slack is; a lease taken for twenty would run out under the last of them, and another replica
# would handle it too. The sweep takes the next at once while there are more.
BATCH = 1
SWEEP_EVERY = 5.0  # seconds between looks for messages due again (a new one is handled at once)
# A step that failed (Slack, the database): 5 s doubling to 5 minutes, for a day; then given up, logged.
RETRY = RetryPolicy(base_delay=5.0, max_delay=300.0, max_attempts=None, max_retry_after=None, jitter=True)
GIVE_UP = timedelta(hours=24)


@dataclass(frozen=True)
class Received:
    """The answer to a callback: 2xx once the body is kept (a duplicate too); 413 too large; 503 not kept."""

    status: int
    detail: str


@dataclass(kw_only=True, eq=False)
class Inbox(BackgroundLoop):
    """Receives texts phones send back and handles them; ``async with`` runs its loop."""

    log: InboundLog
    texts: PhoneTexts
    secret: str = field(repr=False)  # the path segment D7 posts to (the delivery reports' secret)
    clock: Clock = utc_now
    _kick: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    # ------------------------------------------------------------ the endpoint

    def knows(self, secret: str) -> bool:
        """Is ``secret`` the inbound path's? Asked before the body is read."""
        return hmac.compare_digest(secret.encode(), self.secret.encode())

    async def receive(self, body: bytes) -> Received:
        """Keep the body as it came (a duplicate is kept as one, and not handled); handled right after."""
        if len(body) > MAX_BODY:
            log.warning("inbound message refused: %d bytes", len(body))
            return Received(413, "too large")
        digest = hashlib.sha256(body).hexdigest()
        try:
            async with asyncio.timeout(KEEP_WITHIN):
                kept = await self.log.receive(body, digest, DUPLICATE_WINDOW)
        except Exception as exc:  # D7 tries again later
            log.error("inbound message not kept (%s)", kind_of(exc))
            return Received(503, "not kept, try again")
        if kept is None:
            log.info("duplicate inbound message dropped")
            return Received(200, "ok")
        log.info("inbound message kept inbound_id=%s", kept.id)
        self.wake()
        return Received(200, "ok")

    # ------------------------------------------------------------ the loop

    def wake(self) -> None:
        """Look for messages due now (the loop also looks every ``SWEEP_EVERY`` seconds)."""
        self._kick.set()

    async def __aenter__(self) -> Self:
        self._kick.set()  # what a stopped process left is handled at once
        self.start(self._run(), "inbox")
        return self

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SWEEP_EVERY):
                    await self._kick.wait()
            self._kick.clear()
            try:
                await self.work()
            except Exception as exc:  # the database: the next sweep tries again
                log.warning("inbox sweep failed (%s)", kind_of(exc))

    async def work(self) -> int:
        """Handle the messages due now (leased first); how many."""
        async with asyncio.timeout(KEEP_WITHIN):
            records = await self.log.claim(BATCH, LEASE)
        for record in records:
            await self.handle(record)
        if len(records) == BATCH:
            self._kick.set()  # there may be more
        return len(records)

    async def handle(self, record: InboundRecord) -> None:
        """Decide (kept), then act; a failure is tried again later, for a day."""
        try:
            async with asyncio.timeout(HANDLE_WITHIN):
                if record.outcome is Outcome.PENDING:
                    record = await self.texts.decide(record)
                    log.info("inbound_id=%s: %s", record.id, record.outcome.value)
                    await self.log.keep(record, self.clock() + timedelta(seconds=RETRY.wait(1)), working=True)
                record = await self.texts.act(record)
                await self.log.keep(record, None)
        except CannotTell as exc:  # Slack will never take it there: done, without the note
            log.error("inbound_id=%s cannot be told in Slack: %s", record.id, exc)
            await self._keep(record, None)
        except Exception as exc:
            await self._later(record, exc)

    async def _later(self, record: InboundRecord, error: Exception) -> None:
        tried = record.tried()
        if self.clock() - record.received_at > GIVE_UP:
            log.error("gave up handling inbound_id=%s after a day (%s)", record.id, kind_of(error))
            await self._keep(tried, None)
            return
        delay = RETRY.wait(tried.attempts)
        log.warning("inbound_id=%s not handled yet (%s); trying again in %.0fs", record.id, kind_of(error), delay)
        await self._keep(tried, self.clock() + timedelta(seconds=delay))

    async def _keep(self, record: InboundRecord, due: datetime | None) -> None:
        try:
            async with asyncio.timeout(KEEP_WITHIN):
                await self.log.keep(record, due)
        except Exception as exc:  # its lease runs out and it is handled again
            log.warning("could not keep inbound_id=%s (%s)", record.id, kind_of(exc))
