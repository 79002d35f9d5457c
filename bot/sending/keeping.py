"""What the pipeline holds on to when a dependency fails: D7's answer until it is written (in memory, and in the local
journal: written there at once, fsynced once the database is slow to take it), and which sends are only waiting
between two D7 attempts (so that a shutdown can put them back to ``pending`` instead of ``unknown``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from bot.domain.errors import D7Error, kind_of
from bot.domain.ports import AnswerJournal, SendQueue
from bot.domain.retry import RetryPolicy
from bot.domain.sends import LeaseLost, Outcome, SendRecord, SendState

log = logging.getLogger("bot.sending")

# Writing D7's answer (or a deferral) while the database does not take it: 0.2 s doubling to 5 s, until written.
KEEP_RETRY = RetryPolicy(base_delay=0.2, max_delay=5.0, max_attempts=None, max_retry_after=None, jitter=True)
# D7's answer is written to the journal at once (no fsync: a process killed from then on loses none), and made
# durable when its first write failed or has not ended after this long: a database that takes it at once costs a
# small write and the file's truncation; one that is down or locked costs an fsync per answer (shared by those
# arriving together), and a machine stopped from then on loses none.
HOLD_AFTER = 0.2
# A send is "asleep" between two D7 attempts only while this much of its wait is left: near the end the client may
# already be making the next request, and cancelling then could lose an answer.
ASLEEP_MARGIN = 1.0


class Holder(Protocol):
    """Somewhere else to keep what is being written, until the database has it: ``note`` at once (kept across the
    process being killed), ``hold`` durably (across the machine stopping) once the database is slow."""

    def note(self) -> None: ...

    async def hold(self) -> None: ...

    def drop(self) -> None: ...


@dataclass(frozen=True)
class Journaled:
    """D7's answer to one send, held in the journal."""

    journal: AnswerJournal
    record: SendRecord
    outcome: Outcome

    def note(self) -> None:
        self.journal.note(self.record, self.outcome)

    async def hold(self) -> None:
        await self.journal.keep(self.record, self.outcome)

    def drop(self) -> None:
        self.journal.written(self.record.id)


async def keep(
    what: str, record: SendRecord, write: Callable[[], Awaitable[SendRecord]], holder: Holder | None = None
) -> SendRecord:
    """``write()`` until it works: it carries something that cannot be asked again (D7's answer). ``holder`` notes
    it at once, and keeps it durably once the first write failed or took ``HOLD_AFTER`` seconds, or at a shutdown
    that comes first.
    Another worker taking the intent over (``LeaseLost``) ends it; a shutdown cancels it (logged with what was lost,
    if anything)."""
    holding = _Holding(holder, what, record)
    if holder is not None:
        holder.note()
    attempt = 0
    while True:
        try:
            written = await (holding.write_or_hold(write) if attempt == 0 else write())
        except LeaseLost:
            holding.drop()  # another worker settled it
            raise
        except asyncio.CancelledError:
            held = await holding.hold()
            lost = "kept in the journal, written at the next start" if held else "it will read 'unknown'"
            log.error("stopped before %s of send_id=%s was written: %s", what, record.id, lost)
            raise
        except Exception as exc:
            await holding.hold()
            attempt += 1
            if attempt == 1:  # once per send, not once per try
                log.error(
                    "could not write %s of send_id=%s (%s); keeping it and trying again", what, record.id, kind_of(exc)
                )
            await asyncio.sleep(KEEP_RETRY.wait(attempt))
            continue
        holding.drop()
        return written


class _Holding:
    """A holder's ``hold``, run once, whatever asks for it and whenever it is cancelled."""

    def __init__(self, holder: Holder | None, what: str, record: SendRecord) -> None:
        self._holder = holder
        self._what = what
        self._record = record
        self._held: asyncio.Future[None] | None = None
        self._said = False  # its failure was logged

    async def write_or_hold(self, write: Callable[[], Awaitable[SendRecord]]) -> SendRecord:
        if self._holder is None:
            return await write()
        attempt = asyncio.ensure_future(write())
        try:
            done, _ = await asyncio.wait({attempt}, timeout=HOLD_AFTER)
            if not done:
                await self.hold()
            return await attempt
        finally:
            attempt.cancel()  # when this one was cancelled first (done: no effect)

    async def hold(self) -> bool:
        """Held (now or before); False without a holder, or when it failed (logged)."""
        if self._holder is None:
            return False
        if self._held is None:
            self._held = asyncio.ensure_future(self._holder.hold())
            self._held.add_done_callback(self._said_held)
        try:
            await asyncio.shield(self._held)
        except Exception as exc:  # the disk: the answer stays in memory, as without a journal
            if not self._said:
                self._said = True
                log.error("could not keep D7's answer in the journal (%s); it is kept in memory only", kind_of(exc))
            return False
        return True

    def drop(self) -> None:
        if self._holder is not None:
            self._holder.drop()

    def _said_held(self, held: asyncio.Future[None]) -> None:
        if not held.cancelled() and held.exception() is None:
            log.warning("%s of send_id=%s kept in the journal until the database takes it", self._what, self._record.id)


async def replay(
    journal: AnswerJournal, sends: SendQueue, settle: Callable[[SendRecord, Outcome], Awaitable[SendRecord]]
) -> int:
    """D7's answers the journal kept because the database did not take them before the last process stopped:
    written now (``settle``), before recovery would mark their sends unknown, and let go so that they are told at
    once. A send settled meanwhile (another replica marked it unknown, or the answer was written after all) is left
    as it is. How many were written."""
    written = 0
    for kept in journal.kept():
        record = await sends.get(kept.send_id)
        if record is None or record.state is not SendState.SENDING or record.claimed_by != kept.worker:
            if record is not None and record.state is SendState.UNKNOWN and kept.outcome.request_id:
                log.warning(
                    "send_id=%s was settled as unknown before the journal's answer (request_id=%s) was written",
                    kept.send_id,
                    kept.outcome.request_id,
                    extra={"send_id": kept.send_id, "request_id": kept.outcome.request_id},
                )
            journal.written(kept.send_id)
            continue
        log.info(
            "D7's answer of send_id=%s kept in the journal is written now", record.id, extra={"send_id": record.id}
        )
        try:
            record = await settle(record, kept.outcome)
        except LeaseLost:  # another replica settled it just now
            journal.written(kept.send_id)
            continue
        journal.written(kept.send_id)
        await sends.release(record)  # told now, not once the stopped worker's lease has run out
        written += 1
    return written


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
