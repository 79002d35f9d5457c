"""The outbox worker: in each process, claims due intents and moves them on through the pipeline.

Rows are leased (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so replicas never work on the same intent; leases of
rows in work are renewed, so a dead process's rows can be recovered by the others. At start, intents left in
``sending`` become ``unknown``: on SQLite at once (one process owns the file), on PostgreSQL once their lease ran
out. Nothing is ever resent after an answer may have been lost.

``async with outbox:`` starts its two loops (claim, heartbeat) in a task group; leaving stops claiming and lets the
intents in work finish for up to ``drain`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Self

from bot.domain.clock import utc_now
from bot.domain.errors import kind_of
from bot.domain.ports import SendMetrics, SendQueue
from bot.domain.retry import RetryPolicy
from bot.domain.sends import SendRecord
from bot.sending.keeping import replay
from bot.sending.pipeline import Pipeline

log = logging.getLogger("bot.outbox")

DEFAULT_CONCURRENCY = 200
CLAIM_LEASE = timedelta(seconds=30)  # renewed every third of it while in work: a dead worker's intents wait < 40 s
IDLE_POLL = 0.5  # seconds between looks at the table when nobody woke the worker
# After a wake, wait this long so that one claim picks up the intents of a burst instead of one claim each.
CLAIM_WINDOW = 0.025  # measured: 5 ms let workers compete with the acks of a burst
DEFAULT_DRAIN = 25.0  # seconds the intents in work get to finish at shutdown
# Writing D7's answers the journal kept (the database was down when the last process stopped), before any claim.
REPLAY_WITHIN = 60.0
# Claiming while the database does not answer: 0.5 s doubling to 5 s (the outbox goes on within 5 s of recovery).
CLAIM_RETRY = RetryPolicy(base_delay=0.5, max_delay=5.0, max_attempts=None, max_retry_after=None, jitter=True)
# An intent whose step failed unexpectedly (a bug, or a dependency the pipeline did not expect to fail).
WORK_RETRY = RetryPolicy(base_delay=2.0, max_delay=60.0, max_attempts=None, max_retry_after=None, jitter=True)


def new_worker_id() -> str:
    """A name for this process's outbox worker, unique among replicas and restarts."""
    return f"worker-{uuid.uuid4()}"


@dataclass(kw_only=True, eq=False)
class Outbox:
    """Claims due intents and runs them through the pipeline, ``concurrency`` at a time."""

    sends: SendQueue
    pipeline: Pipeline
    wakeup: asyncio.Event  # set by whoever records an intent or makes one due
    metrics: SendMetrics
    single_process: bool  # SQLite: whatever is 'sending' at start was left by a dead process
    concurrency: int = DEFAULT_CONCURRENCY
    lease: timedelta = CLAIM_LEASE
    idle_poll: float = IDLE_POLL
    drain: float = DEFAULT_DRAIN
    worker_id: str = field(default_factory=new_worker_id)  # the process's, which its intake records with
    _stopping: bool = field(default=False, init=False)
    _running: dict[str, asyncio.Task[None]] = field(default_factory=dict, init=False)
    _tasks: asyncio.TaskGroup = field(default_factory=asyncio.TaskGroup, init=False)

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def measure(self) -> int:
        """The backlog (returned) and how long its longest-waiting due intent has waited, for ``/metrics``."""
        depth = await self.sends.backlog()
        oldest = await self.sends.oldest_due()
        self.metrics.backlog(depth)
        self.metrics.overdue(0.0 if oldest is None else max(0.0, (self.pipeline.clock() - oldest).total_seconds()))
        return depth

    async def __aenter__(self) -> Self:
        try:
            async with asyncio.timeout(REPLAY_WITHIN):
                replayed = await self._replay()
        except Exception as exc:
            # Not started: recovery would mark those sends unknown. The journal keeps them for the next start.
            log.error("could not write D7's answers kept in the journal (%s); not starting", kind_of(exc))
            raise
        if replayed:
            log.warning("%d D7 answer(s) kept in the journal written to the database", replayed)
        unknown = await self.sends.recover(everything=self.single_process)
        if unknown:
            log.warning("%d send(s) were in flight when the bot stopped; marked outcome unknown", unknown)
        await self._tasks.__aenter__()
        self._claiming = self._tasks.create_task(self._loop(), name="outbox")
        self._heartbeat = self._tasks.create_task(self._beat(), name="outbox-heartbeat")
        return self

    async def _replay(self) -> int:
        journal = self.pipeline.journal
        return 0 if journal is None else await replay(journal, self.sends, self.pipeline.settle)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop claiming; let the intents in work finish for up to ``drain`` seconds (the rest are recovered at the
        next start)."""
        self._stopping = True
        self.wakeup.set()
        await asyncio.wait([self._claiming])  # a claim under way may still start sends: count them too
        for send_id in self.pipeline.waits.asleep():  # waiting for a retry, nothing at D7: back to pending now
            if (task := self._running.get(send_id)) is not None:
                task.cancel()
        if self._running:
            log.info("waiting up to %.0fs for %d send(s) in flight", self.drain, len(self._running))
            _, pending = await asyncio.wait(set(self._running.values()), timeout=self.drain)
            if pending:
                log.error(
                    "%d send(s) still in flight at shutdown; they will be recovered at the next start", len(pending)
                )
                for task in pending:
                    task.cancel()
        self._heartbeat.cancel()
        await self._tasks.__aexit__(kind, exc, tb)

    async def _loop(self) -> None:
        failures = 0  # claims failed in a row (the database is down): back off, say so once
        while not self._stopping:
            claimed: list[SendRecord] = []
            free = self.concurrency - len(self._running)
            if free > 0:
                await self.pipeline.give_way()  # Slack's requests first: the intents are kept, they can wait
                if self._stopping:
                    break
                try:
                    claimed = await self.sends.claim(self.worker_id, free, self.lease)
                except Exception as exc:
                    failures += 1
                    delay = CLAIM_RETRY.wait(failures)
                    if failures == 1:
                        log.error("could not claim intents (%s); trying again with backoff", kind_of(exc))
                    await asyncio.sleep(delay)
                    continue
                if failures:
                    log.info("claiming intents again after %d failed tries", failures)
                    failures = 0
            for record in claimed:
                self._running[record.id] = asyncio.create_task(self._work(record), name=f"send-{record.id}")
            if claimed:
                continue
            self.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.idle_poll):
                    await self.wakeup.wait()
                await asyncio.sleep(CLAIM_WINDOW)

    async def _work(self, record: SendRecord) -> None:
        try:
            await self.pipeline.handle(record)
        except Exception as exc:
            delay = WORK_RETRY.wait(record.attempts + 1)
            if record.attempts == 0:  # once per intent, not once per try
                log.exception("intent %s failed in the worker; trying again in %.0fs", record.id, delay)
            else:
                log.warning("intent %s failed again in the worker (%s)", record.id, type(exc).__name__)
            with contextlib.suppress(Exception):  # the database may be what failed: the lease then runs out
                await self.sends.later(record, utc_now() + timedelta(seconds=delay))
        finally:
            saturated = len(self._running) >= self.concurrency
            self._running.pop(record.id, None)
            if saturated or not self._running:  # a slot opened that the loop is not already looking for
                self.wakeup.set()

    async def _beat(self) -> None:
        every = max(1.0, self.lease.total_seconds() / 3)
        while True:
            await asyncio.sleep(every)
            try:
                await self.sends.renew(self.worker_id, list(self._running), self.lease)
                if not self.single_process:
                    recovered = await self.sends.recover(everything=False)
                    if recovered:
                        log.warning("%d send(s) of a stopped replica marked outcome unknown", recovered)
                        self.wakeup.set()  # their threads are told now, not at the next poll
                await self.measure()
            except Exception as exc:  # the database is down: the next beat tries again (and the claim loop says so)
                log.warning("outbox heartbeat failed (%s)", kind_of(exc))
