"""In-memory twins of the stores (``SendQueue``, ``SendViews`` and ``AlertLog``, together ``MemorySendStore``;
``AlertLedger``, ``DeliveryLog``, ``SettingsStore``) with the SQL stores' rules, and small fakes of the other ports,
so the sending core runs in milliseconds with time in the test's hands. ``tests/test_store_contract.py`` proves the
send-log twins behave as the SQL stores do.

The stores follow ``bot/storage``: a unique idempotency key, leases that never hand one intent to two workers, a
transition that applies only while the worker still holds the row (``start`` only from ``pending``), recovery to
``unknown``, and the alert ledger's windows. Each change is the domain's own transition on ``SendRecord``; like the
SQL store, a transition returns the passed record moved on, and the stored row gets the same change.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.domain.alerts import AlertActivity
from bot.domain.clock import Clock
from bot.domain.delivery import RecipientDelivery, StatusUpdate, StoredReport, delivery_of
from bot.domain.errors import D7Error, D7OutcomeUnknownError, InputError
from bot.domain.inbound import InboundRecord, OptOut
from bot.domain.inbound import Outcome as InboundOutcome
from bot.domain.models import (
    Origin,
    OutgoingText,
    Person,
    SendRequest,
    SendResult,
    SendStatus,
    StatusReport,
    Surface,
    Via,
)
from bot.domain.ports import RetryHook
from bot.domain.sends import (
    RECORDER_GONE,
    Checked,
    LeaseLost,
    NotSent,
    Outcome,
    Placement,
    PreparedSend,
    Refusal,
    SendRecord,
    SendState,
)
from bot.storage.sends import RECOVERED, STALE_GIVE_UP

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday, 09:00 UTC
REPORT_KEEP = timedelta(days=2)  # as bot.storage.deliveries


class FakeClock:
    """A ``Clock`` that stands still until the test moves it."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> datetime:
        self.now += by
        return self.now


# ------------------------------------------------------------ the send log and outbox


@dataclass
class _Row:
    """One intent as the table keeps it: the record plus the columns ``SendRecord`` does not carry."""

    record: SendRecord
    seq: int  # insertion order: breaks ties between equal created_at (the test clock stands still)
    next_attempt_at: datetime
    lease_until: datetime | None = None
    delivery_final: bool = False


def _oldest_first(rows: Sequence[_Row]) -> list[SendRecord]:
    return [r.record for r in sorted(rows, key=lambda r: (r.record.created_at, r.seq))]


class _SendRows:
    """The table the three send-log twins share: rows by id, the keys taken, the clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._rows: dict[str, _Row] = {}
        self._keys: set[str] = set()
        self._seq = itertools.count(1)

    # ------------------------------------------------------------ for tests

    def next_attempt_at(self, send_id: str) -> datetime:
        """When the intent is next due (its ``next_attempt_at`` column)."""
        return self._rows[send_id].next_attempt_at

    def lease_until(self, send_id: str) -> datetime | None:
        return self._rows[send_id].lease_until

    def records(self, send_ids: Sequence[str]) -> list[SendRecord]:
        """These intents, oldest first (SQL: ``ORDER BY created_at``)."""
        return _oldest_first([self._rows[i] for i in send_ids])

    # ------------------------------------------------------------ shared

    async def get(self, send_id: str) -> SendRecord | None:
        row = self._rows.get(send_id)
        return row.record if row is not None else None

    def _since(self, since: datetime | None) -> list[_Row]:
        return [r for r in self._rows.values() if since is None or r.record.created_at >= since]

    def _held(self, record: SendRecord) -> _Row | None:
        """The row, while the worker that passed ``record`` still holds it (SQL: ``claimed_by = :claimed_by``)."""
        row = self._rows.get(record.id)
        return row if row is not None and row.record.claimed_by == record.claimed_by else None

    def _holder(self, record: SendRecord) -> _Row:
        """``_held``, or ``LeaseLost`` (SQL: the UPDATE changed no row)."""
        row = self._held(record)
        if row is None:
            raise LeaseLost(record.id)
        return row

    @staticmethod
    def _unlease(row: _Row) -> None:
        row.record = replace(row.record, claimed_by=None)
        row.lease_until = None


class MemorySendQueue(_SendRows):
    """``SendQueue`` in memory, with ``SqlSendQueue``'s rules."""

    async def record(
        self,
        request: SendRequest,
        deadline: timedelta,
        not_before: datetime | None = None,
        recorder: str | None = None,
    ) -> SendRecord | None:
        if request.idempotency_key in self._keys:
            return None
        at = self.clock()
        due = max(at, not_before) if not_before is not None else at
        seq = next(self._seq)
        record = SendRecord(
            id=f"send-{seq}",
            request=request,
            state=SendState.PENDING,
            created_at=at,
            deadline_at=due + deadline,
            recorded_by=recorder,
        )
        self._keys.add(request.idempotency_key)
        self._rows[record.id] = _Row(record, seq, next_attempt_at=due)
        return record

    async def confirm(self, record: SendRecord) -> None:
        if (row := self._rows.get(record.id)) is not None:
            row.record = replace(row.record, recorded_by=None)

    # ------------------------------------------------------------ leases

    def _due(self, row: _Row, at: datetime, worker_id: str) -> bool:
        r = row.record
        work = (r.state is SendState.PENDING or (r.state.final and r.posted_at is None)) and row.next_attempt_at <= at
        card = r.card_due_at is not None and r.card_due_at <= at and r.posted_at is not None
        mine = r.recorded_by in (None, worker_id) or r.created_at < at - RECORDER_GONE
        return (work or card) and mine and (row.lease_until is None or row.lease_until < at)

    async def claim(self, worker_id: str, limit: int, lease: timedelta) -> list[SendRecord]:
        at = self.clock()
        due = sorted(
            (r for r in self._rows.values() if self._due(r, at, worker_id)), key=lambda r: (r.next_attempt_at, r.seq)
        )
        for row in due[:limit]:
            row.record = replace(row.record, claimed_by=worker_id)
            row.lease_until = at + lease
        return _oldest_first(due[:limit])

    async def renew(self, worker_id: str, send_ids: Sequence[str], lease: timedelta) -> None:
        for send_id in send_ids:
            row = self._rows.get(send_id)
            if row is not None and row.record.claimed_by == worker_id:
                row.lease_until = self.clock() + lease

    async def release(self, record: SendRecord) -> None:
        if (row := self._held(record)) is not None:
            self._unlease(row)

    async def recover(self, *, everything: bool) -> int:
        at = self.clock()
        recovered = 0
        for row in self._rows.values():
            orphaned = everything or (row.lease_until is not None and row.lease_until < at)
            if row.record.state is SendState.SENDING and orphaned:
                row.record = row.record.finish(Outcome(error=D7OutcomeUnknownError(RECOVERED)), at)
                self._unlease(row)
                recovered += 1
            elif everything and row.record.claimed_by is not None:
                self._unlease(row)
        return recovered

    async def claim_stale(self, limit: int, after: timedelta, again: timedelta) -> list[SendRecord]:
        at = self.clock()

        def stale(row: _Row) -> bool:
            r = row.record
            dry_run = r.outcome is not None and r.outcome.result is not None and r.outcome.result.dry_run
            accepted = (
                r.state is SendState.ACCEPTED
                and r.request_id is not None
                and not dry_run
                and not row.delivery_final
                and (r.reconciled_at is None or r.reconciled_at < at - again)
            )
            unknown = r.state is SendState.UNKNOWN and r.reconciled_at is None
            return (
                (accepted or unknown)
                and r.posted_at is not None
                and (r.finished_at or r.created_at) < at - after
                and (r.finished_at or r.created_at) > at - STALE_GIVE_UP
            )

        taken = sorted((r for r in self._rows.values() if stale(r)), key=lambda r: (r.record.created_at, r.seq))
        for row in taken[:limit]:
            row.record = replace(row.record, reconciled_at=at)
        return [r.record for r in taken[:limit]]

    async def backlog(self) -> int:
        return sum(
            1
            for r in self._rows.values()
            if r.record.state in (SendState.PENDING, SendState.SENDING) or r.record.posted_at is None
        )

    async def stuck(self) -> int:
        at = self.clock()
        return sum(
            1
            for r in self._rows.values()
            if r.record.state is SendState.SENDING and r.lease_until is not None and r.lease_until < at
        )

    async def oldest_due(self) -> datetime | None:
        at = self.clock()
        due = [
            r.next_attempt_at
            for r in self._rows.values()
            if (r.record.state is SendState.PENDING or (r.record.state.final and r.record.posted_at is None))
            and r.next_attempt_at <= at
            and (r.lease_until is None or r.lease_until < at)
        ]
        return min(due, default=None)

    async def by_request_ids(self, request_ids: Sequence[str]) -> dict[str, SendRecord]:
        wanted = set(request_ids)
        return {
            r.record.request_id: r.record
            for r in self._rows.values()
            if r.record.request_id is not None and r.record.request_id in wanted
        }

    # ------------------------------------------------------------ transitions

    async def deny(self, record: SendRecord, refusal: Refusal) -> SendRecord:
        at = self.clock()
        row = self._holder(record)
        row.record = row.record.deny(refusal, at)
        return record.deny(refusal, at)

    async def deduplicate(self, record: SendRecord, first_id: str) -> SendRecord:
        at = self.clock()
        row = self._holder(record)
        row.record = row.record.deduplicate(first_id, at)
        return record.deduplicate(first_id, at)

    async def bundle(self, record: SendRecord, checked: Checked) -> SendRecord:
        at = self.clock()
        row = self._holder(record)
        row.record = row.record.bundle(checked, at)
        return record.bundle(checked, at)

    async def start(
        self, record: SendRecord, checked: Checked, placement: Placement, lease: timedelta
    ) -> SendRecord | None:
        row = self._held(record)
        if row is None or row.record.state is not SendState.PENDING:
            return None
        row.record = row.record.start(checked, placement)
        row.lease_until = self.clock() + lease
        return record.start(checked, placement)

    async def place(self, record: SendRecord, placement: Placement) -> SendRecord:
        row = self._holder(record)
        row.record = row.record.place(placement)
        return record.place(placement)

    async def notice_retry(self, record: SendRecord) -> SendRecord:
        if (row := self._held(record)) is not None:
            row.record = row.record.notice_retry()
        return record.notice_retry()

    async def defer(self, record: SendRecord, until: datetime, error: D7Error) -> SendRecord:
        row = self._holder(record)
        row.record = row.record.defer(error)
        row.next_attempt_at = until
        row.lease_until = None
        return record.defer(error)

    async def finish(self, record: SendRecord, outcome: Outcome) -> SendRecord:
        at = self.clock()
        row = self._holder(record)
        row.record = row.record.finish(outcome, at)
        return record.finish(outcome, at)

    async def told(self, record: SendRecord, result_ts: str | None) -> SendRecord:
        at = self.clock()
        row = self._holder(record)
        row.record = row.record.told(at, result_ts)
        row.lease_until = None
        return record.told(at, result_ts)

    async def later(self, record: SendRecord, until: datetime) -> SendRecord:
        row = self._holder(record)
        if row.record.state is SendState.SENDING:  # SQL: ``state != 'sending'``
            raise LeaseLost(record.id)
        row.record = row.record.later()
        row.next_attempt_at = until
        row.lease_until = None
        return record.later()

    async def card_due(self, record: SendRecord, *, final: bool) -> SendRecord:
        at = self.clock()
        if (row := self._rows.get(record.id)) is not None:  # whoever holds it
            row.record = row.record.card_due(at)  # coalesced by the row's own state, as the UPDATE does
            row.delivery_final = final
            return replace(record, card_due_at=row.record.card_due_at)
        return record.card_due(at)

    async def card_shown(self, record: SendRecord, due_at: datetime) -> SendRecord:
        row = self._held(record)
        if row is None or row.record.card_due_at != due_at:  # a newer status keeps it due
            return record
        row.record = row.record.card_shown()
        return record.card_shown()

    async def card_later(self, record: SendRecord, until: datetime) -> SendRecord:
        row = self._holder(record)
        row.record = row.record.card_later(until)
        row.lease_until = None
        return record.card_later(until)


class MemorySendViews(_SendRows):
    """``SendViews`` in memory, with ``SqlSendViews``'s rules."""

    async def audit(self, since: datetime | None = None) -> list[SendRecord]:
        return _oldest_first(self._since(since))

    async def recent_of(self, user_id: str, limit: int) -> list[SendRecord]:
        mine = [
            r
            for r in self._rows.values()
            if r.record.request.user_id == user_id and not r.record.request.origin.surface.is_alert
        ]
        return list(reversed(_oldest_first(mine)))[:limit]

    async def counts_since(self, since: datetime) -> list[tuple[str, str, int]]:
        counts = Counter(
            (r.request.channel_id, r.state.value)
            for r in await self.audit(since)
            if r.request.origin.surface is not Surface.SUMMARY
        )
        return [(channel, state, n) for (channel, state), n in counts.items()]

    async def needing_a_person(self, since: datetime, limit: int) -> list[SendRecord]:
        states = (SendState.UNKNOWN, SendState.REJECTED, SendState.FAILED)
        return [r for r in reversed(await self.audit(since)) if r.state in states][:limit]

    async def alert_activity(self, since: datetime) -> list[AlertActivity]:
        """Held: the phones each alert was held back for (SQL counts the alert ledger's rows of them)."""
        by_rule: dict[str, list[SendRecord]] = {}
        for r in await self.audit(since):
            if r.request.alert is not None and r.request.origin.surface is Surface.ALERT:
                by_rule.setdefault(r.request.alert.rule, []).append(r)
        return [
            AlertActivity(
                rule,
                max(r.created_at for r in records),
                sum(r.state is SendState.ACCEPTED for r in records),
                sum(len(r.held) for r in records),
                sum(r.state is SendState.DEDUPLICATED for r in records),
                sum(r.state in (SendState.DENIED, SendState.REJECTED, SendState.FAILED) for r in records),
            )
            for rule, records in by_rule.items()
        ]


class MemoryAlertLog(_SendRows):
    """``AlertLog`` in memory, with ``SqlAlertLog``'s rules."""

    async def by_key(self, idempotency_key: str) -> SendRecord | None:
        return next(
            (r.record for r in self._rows.values() if r.record.request.idempotency_key == idempotency_key), None
        )

    async def acknowledge(self, record: SendRecord, user_id: str) -> SendRecord | None:
        row = self._rows.get(record.id)
        if row is None or not row.record.acknowledgeable:  # the first acknowledgement counts
            return None
        at = self.clock()
        row.record = row.record.acknowledge(user_id, at)
        return record.acknowledge(user_id, at)

    async def mark_resolved(self, record: SendRecord) -> SendRecord | None:
        row = self._rows.get(record.id)
        if row is None or row.record.resolved_at is not None:
            return None
        at = self.clock()
        row.record = row.record.resolve(at)
        return record.resolve(at)

    async def acked_repeat(self, rule: str, fingerprint: str, since: datetime) -> SendRecord | None:
        # As SQL: the latest acknowledged alert with the fingerprint, then only if it is of this rule.
        found = [
            r
            for r in self._since(since)
            if (a := r.record.request.alert) is not None
            and getattr(a, "fingerprint", None) == fingerprint  # as the column: only firing alerts have one
            and r.record.request.origin.surface is Surface.ALERT
            and r.record.acked_at is not None
            and r.record.resolved_at is None
        ]
        latest = _newest(found)
        return latest if latest is not None and latest.alert is not None and latest.alert.rule == rule else None

    async def latest_alert(
        self, channel_id: str, identity: str, since: datetime, rules: Collection[str]
    ) -> SendRecord | None:
        return _newest(
            [
                r
                for r in self._since(since)
                if (a := r.record.request.alert) is not None
                and a.rule in rules
                and r.record.request.channel_id == channel_id
                and getattr(a, "identity", None) == identity
                and r.record.request.origin.surface is Surface.ALERT
                and r.record.duplicate_of is None
            ]
        )


def _newest(rows: Sequence[_Row]) -> SendRecord | None:
    return _oldest_first(rows)[-1] if rows else None


class MemorySendsToPhones(_SendRows):
    """``SendsToPhones`` in memory."""

    async def latest_to(
        self, phone: str, since: datetime, surfaces: Collection[Surface] | None = None
    ) -> SendRecord | None:
        found = [
            r.record
            for r in self._since(since - timedelta(days=2))
            if r.record.state is SendState.ACCEPTED
            and (r.record.finished_at or r.record.created_at) >= since  # when it was texted, as the SQL store
            and r.record.checked is not None
            and any(n.e164 == phone for n in r.record.checked.recipients)
            and (surfaces is None or r.record.request.origin.surface in surfaces)
            and not r.record.request.idempotency_key.startswith("answer:")
        ]
        return max(found, key=lambda r: (r.finished_at or r.created_at, r.created_at)) if found else None


class MemorySendStore(MemorySendQueue, MemorySendViews, MemoryAlertLog, MemorySendsToPhones):
    """``SendStore`` in memory: the twins on one table, as ``SqlSendStore`` is on one database."""


# ------------------------------------------------------------ alert dedup and per-phone limits


@dataclass
class _Window:
    start: datetime
    end: datetime
    sent: int
    last_held: bool


@dataclass(frozen=True)
class _Taken:
    rule: str
    held: bool
    window_start: datetime


class MemoryAlertLedger:
    """``AlertLedger`` in memory, with ``SqlAlertLedger``'s windows; ``held_alerts`` reads the send store."""

    def __init__(self, clock: Clock, sends: MemorySendStore) -> None:
        self.clock = clock
        self.sends = sends
        self.leaders: dict[str, tuple[str, datetime]] = {}  # fingerprint → (leader send id, until)
        self.windows: dict[tuple[str, str], _Window] = {}  # (rule, phone) → its current window
        self.taken: dict[str, dict[str, _Taken]] = {}  # send id → phone → what take_quota answered

    async def lead(self, fingerprint: str, send_id: str, window: timedelta) -> str:
        at = self.clock()
        known = self.leaders.get(fingerprint)
        if known is None or known[1] <= at:
            self.leaders[fingerprint] = (send_id, at + window)
            return send_id
        return known[0]

    async def release(self, fingerprint: str, send_id: str) -> None:
        known = self.leaders.get(fingerprint)
        if known is not None and known[0] == send_id:
            del self.leaders[fingerprint]

    async def take_quota(
        self, send_id: str, rule: str, phones: Sequence[str], count: int, per: timedelta
    ) -> dict[str, tuple[bool, datetime]]:
        answered = self.taken.setdefault(send_id, {})
        at = self.clock()
        for phone in sorted(set(phones) - set(answered)):
            window = self.windows.get((rule, phone))
            if window is None or window.end <= at:
                window = self.windows[(rule, phone)] = _Window(at, at + per, sent=1, last_held=False)
            elif window.sent < count:
                window.sent += 1
                window.last_held = False
            else:
                window.last_held = True
            answered[phone] = _Taken(rule, window.last_held, window.start)
        return {phone: (t.held, t.window_start) for phone, t in answered.items()}

    async def give_back(self, send_id: str) -> None:
        for phone, taken in self.taken.pop(send_id, {}).items():
            window = self.windows.get((taken.rule, phone))
            if not taken.held and window is not None and window.start == taken.window_start and window.sent > 0:
                window.sent -= 1

    async def hold(self, send_id: str, rule: str, phones: Sequence[str], window_start: datetime) -> None:
        answered = self.taken.setdefault(send_id, {})
        for phone in phones:
            answered.setdefault(phone, _Taken(rule, True, window_start))

    async def held_windows(self, send_id: str) -> dict[str, datetime]:
        return {phone: t.window_start for phone, t in self.taken.get(send_id, {}).items() if t.held}

    async def held_alerts(self, rule: str, phone: str, window_start: datetime) -> list[SendRecord]:
        ids = [
            send_id
            for send_id, phones in self.taken.items()
            if (t := phones.get(phone)) is not None and t.rule == rule and t.held and t.window_start == window_start
        ]
        return self.sends.records(ids)


# ------------------------------------------------------------ delivery reports and statuses


@dataclass
class _Report:
    stored: StoredReport
    key: str
    received_at: datetime
    applied_at: datetime | None = None


@dataclass
class _Status:
    status: str
    rank: int
    reason: str | None
    notified: bool = False


class MemoryDeliveryLog:
    """``DeliveryLog`` in memory, with ``SqlDeliveryLog``'s rules."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._reports: list[_Report] = []
        self._statuses: dict[str, dict[str, _Status]] = {}
        self._ids = itertools.count(1)

    async def save_report(self, key: str, request_id: str, recipient: str, status: str, reason: str | None) -> bool:
        key = key[:300]
        if any(r.key == key for r in self._reports):
            return False
        stored = StoredReport(f"report-{next(self._ids)}", request_id, recipient, status, reason)
        self._reports.append(_Report(stored, key, self.clock()))
        return True

    async def pending_reports(self, request_ids: Sequence[str] | None = None, limit: int = 500) -> list[StoredReport]:
        since = self.clock() - REPORT_KEEP
        wanted = set(request_ids) if request_ids is not None else None
        found = [
            r.stored
            for r in self._reports
            if r.applied_at is None and r.received_at > since and (wanted is None or r.stored.request_id in wanted)
        ]
        return found[:limit]

    async def mark_applied(self, report_ids: Sequence[str]) -> None:
        for report in self._reports:
            if report.stored.id in report_ids:
                report.applied_at = self.clock()

    async def apply_status(self, send_id: str, recipient: str, status: str, rank: int, reason: str | None) -> bool:
        statuses = self._statuses.setdefault(send_id, {})
        known = statuses.get(recipient)
        if known is None:
            statuses[recipient] = _Status(status, rank, reason)
            return True
        if known.rank >= rank:
            return False
        known.status, known.rank, known.reason = status, rank, reason
        return True

    async def apply_statuses(self, statuses: Sequence[StatusUpdate]) -> set[str]:
        return {
            u.send_id for u in statuses if await self.apply_status(u.send_id, u.recipient, u.status, u.rank, u.reason)
        }

    async def statuses(self, send_id: str) -> list[RecipientDelivery]:
        return [
            RecipientDelivery(recipient, s.status, s.reason, s.notified)
            for recipient, s in self._statuses.get(send_id, {}).items()
        ]

    async def mark_notified(self, send_id: str, recipients: Sequence[str]) -> None:
        for recipient, status in self._statuses.get(send_id, {}).items():
            if recipient in recipients:
                status.notified = True

    async def recent(self, recipients: Sequence[str], since: datetime) -> list[tuple[str, str, str | None, datetime]]:
        return []  # the memory world keeps no times of statuses (the SQL log is tested end to end)

    async def failures_since(self, since: datetime, limit: int) -> list[tuple[str, RecipientDelivery, datetime]]:
        found = [
            (send_id, RecipientDelivery(recipient, s.status, s.reason, s.notified), self.clock())
            for send_id, statuses in self._statuses.items()
            for recipient, s in statuses.items()
            if delivery_of(s.status).failed
        ]
        return found[:limit]  # the memory world keeps no times of statuses: all are "now"


class MemorySettings:
    """``SettingsStore`` in memory: the first writer wins."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self.values.get(key)

    async def put_once(self, key: str, value: str) -> str:
        return self.values.setdefault(key, value)

    async def swap(self, key: str, old: str | None, new: str) -> bool:
        if self.values.get(key) != old:
            return False
        self.values[key] = new
        return True


# ------------------------------------------------------------ D7


def accepted(request_id: str) -> SendResult:
    return SendResult(request_id, SendStatus.ACCEPTED, created_at=None)


def rejected(request_id: str) -> SendResult:
    return SendResult(request_id, SendStatus.REJECTED, created_at=None)


GatewayCall = OutgoingText  # one send as the gateway was asked for it


@dataclass(frozen=True)
class Retried:
    """The client retried after each of ``errors`` (``on_retry`` is called for each), then answered ``then``."""

    errors: tuple[D7Error, ...]
    then: SendResult | BaseException


Answer = SendResult | BaseException | Retried


class FakeGateway:
    """``MessageGateway`` that records each send and answers from a queue (accepted ``req-N`` when it is empty).

    An exception in the queue is raised (a ``D7Error``, or anything else for a crash); ``on_call`` runs while the
    gateway holds a call, before it answers (to look at the store as D7 is being called).
    """

    def __init__(self) -> None:
        self.calls: list[GatewayCall] = []
        self.answers: deque[Answer] = deque()
        self.statuses: dict[str, StatusReport] = {}
        self.on_call: Callable[[GatewayCall], Awaitable[None]] | None = None

    @property
    def dry_run(self) -> bool:
        return False

    def answer(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    async def send(self, text: OutgoingText, on_retry: RetryHook | None = None) -> SendResult:
        return await self._send(text, on_retry)

    async def _send(self, call: GatewayCall, on_retry: RetryHook | None) -> SendResult:
        self.calls.append(call)
        if self.on_call is not None:
            await self.on_call(call)
        answer = self.answers.popleft() if self.answers else accepted(f"req-{len(self.calls)}")
        if isinstance(answer, Retried):
            for attempt, error in enumerate(answer.errors, start=1):
                if on_retry is not None:
                    await on_retry(error, attempt, 0.5)
            answer = answer.then
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def get_status(self, request_id: str, via: Via) -> StatusReport:
        return self.statuses[request_id]

    async def aclose(self) -> None:
        return None


# ------------------------------------------------------------ Slack: conversations and the directory


class SlackDown(Exception):
    """What a fake conversation raises when told to fail."""


@dataclass(frozen=True)
class Said:
    """One call on a conversation: which, in whose conversation, and its arguments (statuses as a tuple)."""

    method: str
    origin: Origin
    args: tuple[Any, ...]


ANNOUNCED = Placement("1700000000.000100")  # where announcements land, unless a test says otherwise


class FakeConversation:
    """``Conversation`` that records every call in its ``FakeConversations`` (and may be told to fail one)."""

    def __init__(self, origin: Origin, book: FakeConversations) -> None:
        self.origin = origin
        self._book = book

    async def _say(self, method: str, *args: Any) -> None:
        self._book.said.append(Said(method, self.origin, args))
        if (seconds := self._book.slowness.pop(method, 0.0)) > 0:
            await asyncio.sleep(seconds)
        if self._book.failing.get(method, 0) > 0:
            self._book.failing[method] -= 1
            raise SlackDown(f"{method} failed (test)")

    async def refuse(self, refusal: Refusal, careful: bool = False) -> None:
        await self._say("refuse", refusal)

    async def not_sent(self, send: PreparedSend, placement: Placement, why: NotSent, careful: bool = False) -> None:
        await self._say("not_sent", send, placement, why)

    async def announce(self, send: PreparedSend, careful: bool = False) -> Placement:
        if careful:
            self._book.careful.append("announce")
        await self._say("announce", send)
        return self._book.placement

    async def retrying(self, send: PreparedSend, placement: Placement, error: D7Error) -> None:
        await self._say("retrying", send, placement, error)

    async def finish(
        self,
        send: PreparedSend,
        placement: Placement,
        outcome: Outcome,
        statuses: Sequence[RecipientDelivery] = (),
        careful: bool = False,
    ) -> str | None:
        await self._say("finish", send, placement, outcome, tuple(statuses))
        return f"result-{sum(s.method == 'finish' for s in self._book.said)}"

    async def update_card(
        self, send: PreparedSend, result_ts: str, outcome: Outcome, statuses: Sequence[RecipientDelivery]
    ) -> None:
        await self._say("update_card", send, result_ts, outcome, tuple(statuses))

    async def undelivered(
        self,
        send: PreparedSend,
        placement: Placement,
        failures: Sequence[RecipientDelivery],
        templates: Sequence[str] = (),
        careful: bool = False,
    ) -> None:
        await self._say("undelivered", send, placement, tuple(failures))

    async def still_unknown(self, send: PreparedSend, placement: Placement, created_at: datetime) -> None:
        await self._say("still_unknown", send, placement, created_at)

    async def points_to(self, send: PreparedSend, thread_ts: str) -> None:
        await self._say("points_to", send, thread_ts)

    async def acknowledged_by_phone(self, phone: str, name: str | None, careful: bool = False) -> None:
        await self._say("acknowledged_by_phone", phone, name)

    async def resolved_by_phone(self, phone: str, name: str | None) -> None:
        await self._say("resolved_by_phone", phone, name)


@dataclass
class FakeConversations:
    """``Conversations``: every conversation's calls in one list, in order. ``announce`` answers ``placement``;
    ``finish`` answers ``result-N`` (N: the how-manieth finish call)."""

    placement: Placement = ANNOUNCED
    said: list[Said] = field(default_factory=list)
    failing: dict[str, int] = field(default_factory=dict)  # method → how many more calls of it fail
    slowness: dict[str, float] = field(default_factory=dict)  # method → seconds its next call takes
    careful: list[str] = field(default_factory=list)  # the calls asked to look for an earlier post first

    def open(self, origin: Origin, received_at: datetime | None = None) -> FakeConversation:
        return FakeConversation(origin, self)

    def fail(self, method: str, times: int = 1) -> None:
        self.failing[method] = times

    def slow(self, method: str, seconds: float) -> None:
        """The next call of ``method`` answers after ``seconds`` (Slack being slow)."""
        self.slowness[method] = seconds

    def of(self, method: str) -> list[tuple[Any, ...]]:
        """The arguments of each call of ``method``."""
        return [s.args for s in self.said if s.method == method]

    @property
    def methods(self) -> list[str]:
        return [s.method for s in self.said]


class FakeDirectory:
    """``Directory``: people with profile phones, user groups, channel names, message links."""

    def __init__(self) -> None:
        self.people: dict[str, Person] = {}
        self.groups: dict[str, list[str]] = {}
        self.channels: dict[str, str] = {}
        self.members: dict[str, set[str]] = {}  # channel → its members, where a test says

    def add_person(self, user_id: str, name: str, phone: str | None = None) -> None:
        self.people[user_id] = Person(user_id, name, phone)

    async def person(self, user_id: str) -> Person:
        if user_id not in self.people:
            raise InputError(f"<@{user_id}> is not a member of this workspace")
        return self.people[user_id]

    async def group_members(self, group_id: str) -> list[str]:
        if group_id not in self.groups:
            raise InputError(f"<!subteam^{group_id}> is not a user group of this workspace")
        return list(self.groups[group_id])

    async def channel_name(self, channel_id: str) -> str:
        if channel_id not in self.channels:
            raise InputError(f"channel {channel_id} not found")
        return self.channels[channel_id]

    async def permalink(self, channel_id: str, ts: str) -> str:
        return f"https://example.slack.com/archives/{channel_id}/p{ts.replace('.', '')}"

    async def is_member(self, channel_id: str, user_id: str) -> bool | None:
        members = self.members.get(channel_id)
        return None if members is None else user_id in members


# ------------------------------------------------------------ texts phones send back, and the opt-out list


class MemoryOptOuts:
    """``OptOutList`` in memory."""

    def __init__(self) -> None:
        self.entries: dict[str, OptOut] = {}

    async def opted_out(self, phones: Sequence[str]) -> dict[str, OptOut]:
        return {p: self.entries[p] for p in phones if p in self.entries}

    async def opt_out(self, entry: OptOut) -> bool:
        if entry.phone in self.entries:
            return False
        self.entries[entry.phone] = entry
        return True

    async def opt_in(self, phone: str) -> bool:
        return self.entries.pop(phone, None) is not None

    async def listing(self, limit: int) -> list[OptOut]:
        return sorted(self.entries.values(), key=lambda e: e.at, reverse=True)[:limit]


@dataclass
class _Inbound:
    record: InboundRecord
    digest: str | None  # while a copy would be a duplicate
    due: datetime | None
    lease_until: datetime | None = None


class MemoryInboundLog:
    """``InboundLog`` in memory, on the test's clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.rows: dict[str, _Inbound] = {}
        self._ids = itertools.count(1)

    async def receive(self, raw: bytes, digest: str, window: timedelta) -> InboundRecord | None:
        at = self.clock()
        for row in self.rows.values():
            if row.digest == digest and row.record.received_at < at - window:
                row.digest = None
        duplicate = any(row.digest == digest for row in self.rows.values())
        record = InboundRecord(id=f"in-{next(self._ids)}", received_at=at, raw=raw)
        if duplicate:
            self.rows[record.id] = _Inbound(replace(record, outcome=InboundOutcome.DUPLICATE), None, None)
            return None
        self.rows[record.id] = _Inbound(record, digest, at)
        return record

    async def claim(self, limit: int, lease: timedelta) -> list[InboundRecord]:
        at = self.clock()
        due = [
            r
            for r in self.rows.values()
            if r.due is not None and r.due <= at and (r.lease_until is None or r.lease_until < at)
        ]
        due.sort(key=lambda r: r.due or at)
        for row in due[:limit]:
            row.lease_until = at + lease
        return sorted((r.record for r in due[:limit]), key=lambda r: r.received_at)

    async def keep(self, record: InboundRecord, due: datetime | None, *, working: bool = False) -> None:
        row = self.rows[record.id]
        row.record, row.due = record, due
        if not working:
            row.lease_until = None

    async def get(self, inbound_id: str) -> InboundRecord | None:
        row = self.rows.get(inbound_id)
        return row.record if row is not None else None

    async def replies_to(self, send_ids: Sequence[str]) -> dict[str, list[InboundRecord]]:
        found: dict[str, list[InboundRecord]] = {}
        for row in sorted(self.rows.values(), key=lambda r: r.record.received_at, reverse=True):
            if row.record.send_id in send_ids and row.record.outcome is InboundOutcome.REPLIED:
                found.setdefault(row.record.send_id, []).append(row.record)
        return found
