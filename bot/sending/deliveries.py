"""Delivery reports and status: what D7 says happened to each text after it accepted the request.

- ``receive``: the ``POST /d7/reports/{secret}`` handler's work. A wrong secret is "not found" and a malformed body
  "bad request", with nothing stored; a valid report is stored once per (message, status) and answered at once;
  unknown request ids are kept too (the answer never says whether an id exists).
- ``apply``: reports whose send is known are applied to its recipients' statuses (never backwards) and the send's
  result message is marked for an update, which the outbox does (``Teller.show_statuses``). Reports are
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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self

from bot.domain.delivery import Delivery, StatusUpdate, delivery_of, e164_of
from bot.domain.errors import D7Error, kind_of
from bot.domain.models import StatusReport
from bot.domain.ports import DeliveryLog, MessageGateway, ReportParser, SendQueue
from bot.domain.sends import SendRecord, SendState
from bot.domain.templates import window_closed
from bot.sending.telling import Teller

WINDOW = timedelta(hours=24)  # WhatsApp's customer-service window

log = logging.getLogger("bot.deliveries")

DEFAULT_RECONCILE_AFTER = timedelta(minutes=10)
LOOK_AGAIN = timedelta(hours=1)  # a send still not final after a look-up is looked up again this much later
LOOKUPS_PER_SECOND = 2.0  # D7's status endpoint is shared with everything else on the account
SWEEP_EVERY = 15.0  # seconds between looks for waiting reports and stale sends
STATUS_FRESH = 30.0  # seconds a status D7 gave for /sms status is answered again without asking D7
WAITING_KEPT = 10_000  # request ids remembered for a send to learn; past that, the sweep applies their reports


@dataclass(frozen=True)
class Received:
    status: int  # the HTTP status to answer
    detail: str
    request_id: str | None = None  # a valid report's request id (apply it now)


@dataclass(kw_only=True, eq=False)
class Deliveries:
    """Receives reports, applies them, reconciles stale sends; ``async with`` runs its loop in a task group."""

    sends: SendQueue
    reports: DeliveryLog
    gateway: MessageGateway
    teller: Teller
    secret: str = field(repr=False)  # the path segment D7 posts reports to
    wake: Callable[[], None]  # the outbox rewrites result messages
    parse: ReportParser
    reconcile_after: timedelta = DEFAULT_RECONCILE_AFTER
    lookups_per_second: float = LOOKUPS_PER_SECOND
    _tasks: asyncio.TaskGroup = field(default_factory=asyncio.TaskGroup, init=False)
    _kick: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    # Request ids with reports received here before their send was known (oldest first), and with reports to apply
    # now.
    _waiting: dict[str, None] = field(default_factory=dict, init=False)
    _ready: set[str] = field(default_factory=set, init=False)
    _statuses: dict[str, tuple[float, StatusReport]] = field(default_factory=dict, init=False)  # /sms status

    async def window_closed(self, numbers: Sequence[str], at: datetime) -> set[str]:
        """Numbers whose free WhatsApp text failed for a closed 24-hour window in the last 24 hours, with nothing
        delivered to them since (a reply opens the window again, but only a later delivery shows the bot that)."""
        if not numbers:
            return set()
        closed: dict[str, datetime] = {}
        reached: dict[str, datetime] = {}
        for recipient, status, reason, when in await self.reports.recent(numbers, at - WINDOW):
            if window_closed(reason):
                closed[recipient] = max(when, closed.get(recipient, when))
            elif delivery_of(status) in (Delivery.DELIVERED, Delivery.READ):
                reached[recipient] = max(when, reached.get(recipient, when))
        return {n for n, when in closed.items() if n not in reached or reached[n] < when}

    # ------------------------------------------------------------ the report endpoint

    def knows(self, secret: str) -> bool:
        """Is ``secret`` the report path's? Asked before the body is read: a wrong one is not worth reading."""
        return hmac.compare_digest(secret.encode(), self.secret.encode())

    async def receive(self, secret: str, body: bytes) -> Received:
        if not hmac.compare_digest(secret.encode(), self.secret.encode()):
            return Received(404, "not found")
        try:
            report = self.parse(body)
        except ValueError as exc:
            log.warning("malformed delivery report: %s", exc)
            return Received(400, f"malformed delivery report: {exc}")
        if delivery_of(report.status) is Delivery.OTHER:
            log.warning("delivery report with a status the bot does not know: %r (kept, not final)", report.status)
        fresh = await self.reports.save_report(
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
        self._kick.set()

    async def apply(self, request_ids: Sequence[str] | None = None) -> int:
        """Apply waiting reports (of these requests, or all) whose send is known; return how many were applied.

        Storage hands back only reports whose send knows their request_id: reports no send matches (yet) never
        take the place of ones that can be applied, however many pile up."""
        # Received here, perhaps before D7's answer to their send is stored: applied as soon as this process learns
        # the request_id (``request_id_known``), else by the sweep. Noted before reading, so a request_id learnt
        # meanwhile is not missed.
        self._wait_for(request_ids or ())
        reports = await self.reports.pending_reports(request_ids)
        if not reports:
            return 0
        known = await self.sends.by_request_ids([r.request_id for r in reports])
        applied: list[str] = []
        updates: list[StatusUpdate] = []
        sends: dict[str, SendRecord] = {}
        numbers: dict[str, frozenset[str]] = {}  # send id → its recipients, looked up once per batch
        for report in reports:
            send = known.get(report.request_id)
            if send is None:
                continue  # D7's answer to the send is not stored yet, or not our request: keep it for later
            applied.append(report.id)
            if send.id not in numbers:
                numbers[send.id] = _numbers(send)
            if numbers[send.id] and report.recipient not in numbers[send.id]:
                # Never shown, never told: a report only speaks for the send's own recipients.
                log.warning(
                    "ignored a delivery report for send_id=%s: the number is not one of its recipients", send.id
                )
                continue
            sends[send.id] = send
            rank = delivery_of(report.status).rank
            updates.append(StatusUpdate(send.id, report.recipient, report.status, rank, report.reason))
        # A batch of reports (a broadcast's thousand) is one transaction, not a commit each.
        changed = {send_id: sends[send_id] for send_id in await self.reports.apply_statuses(updates)}
        # The result messages are marked due before the reports are marked applied: a crash in between applies a
        # report twice (harmless, statuses never go backwards), never leaves a card without its update.
        await self._changed(list(changed.values()))
        await self.reports.mark_applied(applied)
        for request_id in known:
            self._waiting.pop(request_id, None)
        return len(applied)

    def _wait_for(self, request_ids: Sequence[str]) -> None:
        """Remember these request ids until their send is known; the oldest are forgotten past ``WAITING_KEPT``
        (someone else's requests are never known: their reports are left to the sweep's age limit)."""
        for request_id in request_ids:
            self._waiting[request_id] = None
        while len(self._waiting) > WAITING_KEPT:
            del self._waiting[next(iter(self._waiting))]

    async def _changed(self, records: Sequence[SendRecord]) -> None:
        """These sends' result messages must show new statuses (the outbox rewrites them)."""
        for record in records:
            sent_to = record.checked.recipients if record.checked is not None else ()
            statuses = {s.recipient: s for s in await self.reports.statuses(record.id)}
            final = all(n.e164 in statuses and statuses[n.e164].delivery.final for n in sent_to)
            await self.sends.card_due(record, final=final)
        if records:
            self.wake()

    def request_id_known(self, request_id: str) -> None:
        """A send just learnt its request_id: a report that came first may be waiting for it."""
        if request_id in self._waiting:
            self.received(request_id)

    # ------------------------------------------------------------ reconciliation and look-ups

    async def reconcile(self, limit: int = 50) -> int:
        """Look up stale sends at D7 (bounded rate); note unknown outcomes. Return how many were handled."""
        stale = await self.sends.claim_stale(limit, self.reconcile_after, LOOK_AGAIN)
        for i, record in enumerate(stale):
            if i:
                await asyncio.sleep(1 / self.lookups_per_second)
            try:
                if record.state is SendState.UNKNOWN:
                    await self.teller.still_unknown(record)
                    continue
                # A send in several requests: each one that went out, at the same bounded rate.
                ids = record.outcome.accepted_ids if record.outcome is not None else ()
                for n, request_id in enumerate(ids or (record.request_id or "",)):
                    if n:
                        await asyncio.sleep(1 / self.lookups_per_second)
                    report = await self.gateway.get_status(request_id, record.request.via)
                    await self.absorb(record, report)
            except D7Error as exc:
                log.warning("status look-up failed send_id=%s: %s", record.id, type(exc).__name__)
                continue
            except Exception:
                log.exception("reconciling send_id=%s failed", record.id)
                continue
        if stale:
            log.info("reconciled %d stale send(s)", len(stale))
        return len(stale)

    async def absorb(self, record: SendRecord, report: StatusReport) -> None:
        """Statuses from D7's status endpoint, applied like reports (never backwards)."""
        numbers = _numbers(record)
        updates = [
            StatusUpdate(record.id, e164_of(line.recipient), line.status, delivery_of(line.status).rank, line.reason)
            for line in report.recipients
            if not numbers or e164_of(line.recipient) in numbers
        ]
        if await self.reports.apply_statuses(updates):
            await self._changed([record])

    async def find(self, team_id: str, request_id: str) -> SendRecord | None:
        """``/sms status``: the send with this request_id made in this workspace, or None."""
        record = (await self.sends.by_request_ids([request_id])).get(request_id)
        return record if record is not None and record.request.origin.team_id == team_id else None

    async def status(self, record: SendRecord, request_id: str | None = None) -> StatusReport:
        """D7's status of the send (of its request ``request_id``, when it went in several), asked at most once per
        ``STATUS_FRESH`` seconds per request_id (asking again and again costs D7 calls and tells nothing new)."""
        request_id = request_id or record.request_id or ""
        now = time.monotonic()
        kept = self._statuses.get(request_id)
        if kept is not None and now - kept[0] < STATUS_FRESH:
            return kept[1]
        report = await self.gateway.get_status(request_id, record.request.via)
        if len(self._statuses) >= 1000:
            self._statuses.clear()
        self._statuses[request_id] = (now, report)
        await self.absorb(record, report)
        return report

    async def lookup(self, team_id: str, request_id: str) -> tuple[SendRecord, StatusReport] | None:
        """The send and D7's status of it; None when not found."""
        record = await self.find(team_id, request_id)
        return None if record is None else (record, await self.status(record, request_id))

    # ------------------------------------------------------------ the background loop

    async def __aenter__(self) -> Self:
        await self._tasks.__aenter__()
        self._loop = self._tasks.create_task(self._run(), name="deliveries")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._loop.cancel()
        await self._tasks.__aexit__(kind, exc, tb)

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
            except Exception as exc:  # the database or D7 is down: the next sweep tries again
                log.warning("delivery sweep failed (%s); trying again in %.0fs", kind_of(exc), SWEEP_EVERY)


def _numbers(record: SendRecord) -> frozenset[str]:
    """The numbers the send went to (empty for a send from before checks were kept: any report counts)."""
    return frozenset(n.e164 for n in record.checked.recipients) if record.checked is not None else frozenset()
