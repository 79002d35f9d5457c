"""The outbox worker: an asyncio task in each process that claims due intents and moves them on.

Rows are leased (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so replicas never work on the same intent; leases of
rows in work are renewed, so a dead process's rows can be recovered by the others. At start, intents left in
``sending`` become ``unknown``: on SQLite at once (one process owns the file), on PostgreSQL once their lease ran
out. Nothing is ever resent after an answer may have been lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import timedelta

from bot.domain.models import SendRecord
from bot.metrics import Metrics
from bot.service import SendService
from bot.storage.store import SqlStore

log = logging.getLogger("bot.outbox")

DEFAULT_CONCURRENCY = 200
CLAIM_LEASE = timedelta(seconds=60)
IDLE_POLL = 0.5  # seconds between looks at the table when nobody woke the worker
# After a wake, wait this long so that one claim picks up the intents of a burst instead of one claim each.
CLAIM_WINDOW = 0.025  # measured: 5 ms let workers compete with the acks of a burst


class Outbox:
    """Claims due intents and runs them through the service, ``concurrency`` at a time."""

    def __init__(
        self,
        store: SqlStore,
        service: SendService,
        *,
        single_process: bool,
        metrics: Metrics | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        lease: timedelta = CLAIM_LEASE,
        idle_poll: float = IDLE_POLL,
    ) -> None:
        self.store = store
        self.service = service
        self.single_process = single_process
        self.metrics = metrics
        self.concurrency = concurrency
        self.lease = lease
        self.idle_poll = idle_poll
        self.worker_id = f"worker-{uuid.uuid4()}"
        self._wake = asyncio.Event()
        self._stopping = False
        self._running: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def wake(self) -> None:
        """A new intent was recorded: look now rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        unknown = await self.store.recover(everything=self.single_process)
        if unknown:
            log.warning("%d send(s) were in flight when the bot stopped; marked outcome unknown", unknown)
        self._loop_task = asyncio.create_task(self._loop(), name="outbox")
        self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="outbox-heartbeat")

    async def stop(self, seconds: float) -> int:
        """Stop claiming; let the intents in work finish for up to ``seconds``; return how many did not."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        left = 0
        if self._running:
            log.info("waiting up to %.0fs for %d send(s) in flight", seconds, len(self._running))
            _, pending = await asyncio.wait(set(self._running.values()), timeout=seconds)
            left = len(pending)
            if left:
                log.error("%d send(s) still in flight at shutdown; they will be recovered at the next start", left)
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
        return left

    async def settle(self, seconds: float = 10.0) -> None:
        """Wait until nothing is due and nothing is in work (for tests and benchmarks)."""
        async with asyncio.timeout(seconds):
            while True:
                self._idle.clear()
                self._wake.set()
                await self._idle.wait()
                if not self._running:
                    return

    async def _loop(self) -> None:
        while not self._stopping:
            claimed: list[SendRecord] = []
            free = self.concurrency - len(self._running)
            if free > 0:
                try:
                    claimed = await self.store.claim(self.worker_id, free, self.lease)
                except Exception:
                    log.exception("could not claim intents; retrying")
                    await asyncio.sleep(1)
                    continue
            for record in claimed:
                self._running[record.id] = asyncio.create_task(self._work(record), name=f"send-{record.id}")
            if claimed:
                continue
            if not self._running:
                self._idle.set()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.idle_poll):
                    await self._wake.wait()
                await asyncio.sleep(CLAIM_WINDOW)

    async def _work(self, record: SendRecord) -> None:
        try:
            await self.service.handle(record, self.worker_id)
        except Exception:
            log.exception("intent %s failed in the worker; it will be tried again", record.id)
            with contextlib.suppress(Exception):
                await self.store.release(record.id, self.worker_id)
        finally:
            saturated = len(self._running) >= self.concurrency
            self._running.pop(record.id, None)
            if saturated or not self._running:  # a slot opened that the loop is not already looking for
                self._wake.set()

    async def _heartbeat(self) -> None:
        every = max(1.0, self.lease.total_seconds() / 3)
        while True:
            await asyncio.sleep(every)
            try:
                await self.store.renew(self.worker_id, list(self._running), self.lease)
                if not self.single_process:
                    recovered = await self.store.recover(everything=False)
                    if recovered:
                        log.warning("%d send(s) of a stopped replica marked outcome unknown", recovered)
                if self.metrics is not None:
                    self.metrics.outbox_depth.set(await self.store.backlog())
            except Exception:
                log.exception("outbox heartbeat failed")
