"""Delivery reports and status: what D7 says happened to each text after it accepted the request.

- ``receive``: the ``POST /d7/reports/{secret}`` handler's work. A wrong secret is "not found" and a malformed body
  "bad request", with nothing stored; a valid report is stored once per (message, status) and answered at once;
  unknown request ids are kept too (the answer never says whether an id exists).
- ``apply``: reports whose send is known are applied to its recipients' statuses (never backwards) and the send's
  result message is marked for an update, which the outbox does (``SendService._update_card``). Reports are
  applied by one loop in batches (whatever arrived since it last looked), not one task per report. A report that
  arrived before D7's answer to the send waits and is applied when the send learns its request_id.
- ``reconcile``: sends still without a final status after ``after`` are looked up at D7, a few per second, and
  ``unknown`` outcomes get a note in their thread (D7 cannot look a send up without a request_id).
- ``lookup``: ``/sms status <request_id>`` for sends made in this workspace.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from bot.d7.reports import parse_report
from bot.domain.delivery import Delivery, delivery_of, e164_of
from bot.domain.errors import D7Error
from bot.domain.models import SendRecord, SendState, StatusReport
from bot.domain.ports import MessageGateway
from bot.service import SendService
from bot.storage.store import SqlStore

log = logging.getLogger("bot.deliveries")

DEFAULT_RECONCILE_AFTER = timedelta(minutes=10)
LOOK_AGAIN = timedelta(hours=1)  # a send still not final after a look-up is looked up again this much later
LOOKUPS_PER_SECOND = 2.0  # D7's status endpoint is shared with everything else on the account
SWEEP_EVERY = 15.0  # seconds between looks for waiting reports and stale sends


@dataclass(frozen=True)
class Received:
    status: int  # the HTTP status to answer
    detail: str
    request_id: str | None = None  # a valid report's request id (apply it now)


class Deliveries:
    def __init__(
        self,
        store: SqlStore,
        gateway: MessageGateway,
        service: SendService,
        secret: str,
        wake: Callable[[], None],
        *,
        reconcile_after: timedelta = DEFAULT_RECONCILE_AFTER,
        lookups_per_second: float = LOOKUPS_PER_SECOND,
    ) -> None:
        self.store = store
        self.gateway = gateway
        self.service = service
        self._secret = secret.encode()
        self.wake = wake
        self.reconcile_after = reconcile_after
        self.lookups_per_second = lookups_per_second
        self._task: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self._waiting: set[str] = set()  # request ids with reports received here before their send was known
        self._ready: set[str] = set()  # request ids with reports to apply now
        self._idle = asyncio.Event()  # nothing ready and nothing being applied
        self._idle.set()

    # ------------------------------------------------------------ the report endpoint

    async def receive(self, secret: str, body: bytes) -> Received:
        if not hmac.compare_digest(secret.encode(), self._secret):
            return Received(404, "not found")
        try:
            report = parse_report(body)
        except ValueError as exc:
            log.warning("malformed delivery report: %s", exc)
            return Received(400, f"malformed delivery report: {exc}")
        if delivery_of(report.status) is Delivery.OTHER:
            log.warning("delivery report with a status the bot does not know: %r (kept, not final)", report.status)
        fresh = await self.store.save_report(
            report.key, report.request_id, e164_of(report.recipient), report.status, report.reason
        )
        if not fresh:
            log.info("duplicate delivery report ignored request_id=%s", report.request_id)
            return Received(200, "ok")
        return Received(200, "ok", report.request_id)

    # ------------------------------------------------------------ applying

    def received(self, request_id: str) -> None:
        """A report for ``request_id`` was stored: apply it at once (in one batch with the others arriving now)."""
        self._ready.add(request_id)
        self._idle.clear()
        self._kick.set()

    async def apply(self, request_ids: Sequence[str] | None = None) -> int:
        """Apply waiting reports (of these requests, or all) whose send is known; return how many were applied."""
        reports = await self.store.pending_reports(request_ids=request_ids)
        if not reports:
            return 0
        known = await self.store.sends_by_request_id([r.request_id for r in reports])
        applied: list[str] = []
        changed: dict[str, SendRecord] = {}
        # Reports for sends whose D7 answer is not stored yet: applied as soon as this process learns the
        # request_id (``request_id_known``), else by the sweep.
        self._waiting |= {r.request_id for r in reports} - set(known)
        for report in reports:
            send = known.get(report.request_id)
            if send is None:
                continue  # D7's answer to the send is not stored yet, or not our request: keep it for later
            if await self._apply(send.id, report.recipient, report.status, report.reason):
                changed[send.id] = send
            applied.append(report.id)
        await self.store.mark_applied(applied)
        self._waiting -= set(known)
        await self._changed(list(changed.values()))
        return len(applied)

    async def _apply(self, send_id: str, recipient: str, status: str, reason: str | None) -> bool:
        """One recipient's status, unless as far or further is known; True if it changed."""
        return await self.store.apply_status(send_id, recipient, status, delivery_of(status).rank, reason)

    async def _changed(self, records: Sequence[SendRecord]) -> None:
        """These sends' result messages must show new statuses (the outbox rewrites them)."""
        for record in records:
            sent_to = self.service.prepared(record).recipients
            statuses = {s.recipient: s for s in await self.store.statuses(record.id)}
            final = all(n.e164 in statuses and statuses[n.e164].delivery.final for n in sent_to)
            await self.store.card_due(record.id, final=final)
        if records:
            self.wake()

    def request_id_known(self, request_id: str) -> None:
        """A send just learnt its request_id: a report that came first may be waiting for it."""
        if request_id in self._waiting:
            self.received(request_id)

    # ------------------------------------------------------------ reconciliation and look-ups

    async def reconcile(self, limit: int = 50) -> int:
        """Look up stale sends at D7 (bounded rate); note unknown outcomes. Return how many were handled."""
        stale = await self.store.claim_stale(limit, self.reconcile_after, LOOK_AGAIN)
        for i, record in enumerate(stale):
            if i:
                await asyncio.sleep(1 / self.lookups_per_second)
            try:
                if record.state is SendState.UNKNOWN:
                    await self.service.note_unknown(record)
                    continue
                report = await self.gateway.get_status(record.request_id or "", record.request.via)
            except D7Error as exc:
                log.warning("status look-up failed send_id=%s: %s", record.id, type(exc).__name__)
                continue
            except Exception:
                log.exception("reconciling send_id=%s failed", record.id)
                continue
            await self.absorb(record, report)
        if stale:
            log.info("reconciled %d stale send(s)", len(stale))
        return len(stale)

    async def absorb(self, record: SendRecord, report: StatusReport) -> None:
        """Statuses from D7's status endpoint, applied like reports (never backwards)."""
        changed = False
        for line in report.recipients:
            changed |= await self._apply(record.id, e164_of(line.recipient), line.status, line.reason)
        if changed:
            await self._changed([record])

    async def lookup(self, team_id: str, request_id: str) -> tuple[SendRecord, StatusReport] | None:
        """``/sms status``: the send (made in this workspace) and D7's status; None when not found."""
        record = (await self.store.sends_by_request_id([request_id])).get(request_id)
        if record is None or record.request.origin.team_id != team_id:
            return None
        report = await self.gateway.get_status(request_id, record.request.via)
        await self.absorb(record, report)
        return record, report

    # ------------------------------------------------------------ the background loop

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="deliveries")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        swept = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, swept + SWEEP_EVERY - loop.time())):
                    await self._kick.wait()
            self._kick.clear()
            try:
                ready, self._ready = self._ready, set()
                if ready:
                    await self.apply(sorted(ready))
                if loop.time() >= swept + SWEEP_EVERY:
                    swept = loop.time()
                    await self.apply()
                    await self.reconcile()
            except Exception:
                log.exception("delivery sweep failed; trying again in %.0fs", SWEEP_EVERY)
            finally:
                if not self._ready:
                    self._idle.set()

    async def settle(self, seconds: float = 10.0) -> None:
        """Wait until the reports received so far are applied (for tests and benchmarks)."""
        async with asyncio.timeout(seconds):
            await self._idle.wait()
