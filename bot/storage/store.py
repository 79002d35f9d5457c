"""The send log and outbox on SQLAlchemy 2 (async): SQLite by default, PostgreSQL for several replicas.

Intent first: a request is inserted (unique idempotency key) before the Slack ack, and only the outbox worker
that holds a row's lease may move it on. ``sending`` is written *before* D7 is called, so a process that dies
mid-send leaves a row that recovery turns into ``unknown`` rather than sending twice.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.domain.delivery import RecipientDelivery
from bot.domain.models import AlertInfo, Origin, RecipientRef, RefKind, SendRecord, SendRequest, SendState, Via
from bot.storage.engine import sqlite_inline_engine
from bot.storage.schema import (
    UTCDateTime,
    alert_dedupe,
    alert_deliveries,
    alert_windows,
    delivery_reports,
    kv,
    recipient_statuses,
    sends,
)

log = logging.getLogger("bot.storage")

FINAL_STATES = [s.value for s in SendState if s.final]
# How long the bot keeps trying to tell Slack an outcome before it gives up (and logs it).
POST_GIVE_UP = timedelta(hours=24)
# Reports for request ids the bot does not know (yet) are kept this long; statuses are looked up this long.
REPORT_KEEP = timedelta(days=2)
STALE_GIVE_UP = timedelta(hours=24)


def now() -> datetime:
    return datetime.now(UTC)


def _refs(refs: Sequence[RecipientRef]) -> list[dict[str, str | None]]:
    return [{"kind": r.kind.value, "value": r.value, "label": r.label} for r in refs]


def _zone_name(when: datetime | None) -> str | None:
    return getattr(when.tzinfo, "key", None) if when is not None else None


def _in_zone(when: datetime | None, zone: str | None) -> datetime | None:
    """Stored as UTC; given back in the zone it was asked in."""
    if when is None or not zone:
        return when
    try:
        return when.astimezone(ZoneInfo(zone))
    except (ZoneInfoNotFoundError, ValueError):
        return when


def _alert_json(alert: AlertInfo | None) -> dict[str, Any] | None:
    if alert is None:
        return None
    return {
        "rule": alert.rule,
        "kind": alert.kind,
        "fingerprint": alert.fingerprint,
        "message": alert.message,
        "phone": alert.phone,
        "window_start": alert.window_start.isoformat() if alert.window_start else None,
    }


def _alert(data: dict[str, Any] | None) -> AlertInfo | None:
    if not data:
        return None
    start = data.get("window_start")
    return AlertInfo(
        rule=data["rule"],
        kind=data.get("kind", "alert"),
        fingerprint=data.get("fingerprint"),
        message=data.get("message"),
        phone=data.get("phone"),
        window_start=datetime.fromisoformat(start) if start else None,
    )


def _record(row: sa.Row[Any]) -> SendRecord:
    m = row._mapping
    origin = Origin(
        surface=m["surface"],
        team_id=m["team_id"],
        user_id=m["user_id"],
        channel_id=m["channel_id"],
        response_url=m["response_url"],
        thread_ts=m["origin_thread_ts"],
    )
    request = SendRequest(
        via=Via(m["via"]),
        origin=origin,
        recipients=tuple(RecipientRef(RefKind(r["kind"]), r["value"], r.get("label")) for r in m["refs"]),
        text=m["text"],
        idempotency_key=m["idempotency_key"],
        sender=m["requested_sender"],
        schedule_time=_in_zone(m["schedule_time"], m["schedule_tz"]),
        alert=_alert(m["alert"]),
    )
    return SendRecord(
        id=m["id"],
        request=request,
        state=SendState(m["state"]),
        created_at=m["created_at"],
        attempts=m["attempts"],
        deadline_at=m["deadline_at"],
        rule=m["rule"],
        sender=m["sender"],
        originator=m["originator"],
        recipients=m["recipients"],
        names=m["names"] or {},
        encoding=m["encoding"],
        segments=m["segments"],
        refusal_kind=m["refusal_kind"],
        problems=m["problems"] or [],
        thread_ts=m["thread_ts"],
        private=bool(m["private"]),
        retry_notice_posted=bool(m["retry_notice_posted"]),
        posted_at=m["posted_at"],
        request_id=m["request_id"],
        d7_created_at=m["d7_created_at"],
        http_status=m["http_status"],
        error_code=m["error_code"],
        error_message=m["error_message"],
        error_kind=m["error_kind"],
        finished_at=m["finished_at"],
        sent_text=m["sent_text"],
        duplicate_of=m["duplicate_of"],
        held=m["held"] or [],
        result_ts=m["result_ts"],
        card_due_at=m["card_due_at"],
        reconciled_at=m["reconciled_at"],
    )


class _Inline:
    """A synchronous SQLite connection behind the async ``execute`` the store uses."""

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    async def execute(self, statement: sa.Executable, parameters: Any = None) -> sa.CursorResult[Any]:
        return self._conn.execute(statement, parameters)


class SqlStore:
    """The ``SendStore`` on SQLAlchemy. One instance per process.

    PostgreSQL goes through asyncpg. SQLite statements run inline on the event loop with the standard driver:
    in WAL mode with ``synchronous=NORMAL`` a commit does not fsync, so a statement costs microseconds, less
    than aiosqlite's hop to its thread and back. It is safe because no transaction here awaits anything but
    its own statements, so transactions never interleave on the single connection.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._sync: sa.Engine | None = None
        self._intakes: list[AsyncEngine] = []
        self._intake: AsyncEngine | None = None
        self.engine = engine
        self._pending: dict[str, list[tuple[dict[str, Any], asyncio.Future[bool]]]] = {}
        self._flushers: dict[str, asyncio.Task[None]] = {}
        self._writes: list[tuple[sa.Update, asyncio.Future[int]]] = []
        self._writer: asyncio.Task[None] | None = None

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @engine.setter
    def engine(self, engine: AsyncEngine) -> None:
        if self._sync is not None:
            self._sync.dispose()
        self._engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self._sync = sqlite_inline_engine(engine) if engine.dialect.name == "sqlite" else None
        # PostgreSQL: intents are inserted (before each ack) through connections of their own, so an ack never
        # waits for a connection that outbox workers hold (measured in an alert storm: ack p99 378 ms → see
        # docs/performance.md).
        self._intake = (
            create_async_engine(engine.url, pool_size=2, max_overflow=2, pool_pre_ping=True) if self.postgres else None
        )
        if self._intake is not None:
            self._intakes.append(self._intake)

    def _insert(self, table: sa.Table) -> Any:
        """``INSERT`` with the dialect's ``ON CONFLICT`` clauses."""
        return pg_insert(table) if self.postgres else sqlite_insert(table)

    @asynccontextmanager
    async def _begin(self, intake: bool = False) -> AsyncIterator[Any]:
        if self._sync is None:
            engine = self._intake if intake and self._intake is not None else self._engine
            async with engine.begin() as conn:
                yield conn
        else:
            with self._sync.begin() as conn:
                yield _Inline(conn)

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[Any]:
        if self._sync is None:
            async with self._engine.connect() as conn:
                yield conn
        else:
            with self._sync.connect() as conn:
                yield _Inline(conn)

    async def aclose(self) -> None:
        if self._sync is not None:
            self._sync.dispose()
        for intake in self._intakes:
            await intake.dispose()

    # ------------------------------------------------------------ recording

    async def record(
        self, request: SendRequest, deadline: timedelta, not_before: datetime | None = None
    ) -> SendRecord | None:
        """Insert a pending intent; None when its idempotency key was recorded before (a duplicate).

        ``not_before``: the outbox leaves it alone until then (an end-of-window summary); the deadline counts
        from then.

        Concurrent calls share one multi-row insert and one commit (group commit): under a burst, acks wait for
        one round trip instead of queueing for the database one by one.
        """
        at = now()
        due = max(at, not_before) if not_before is not None else at
        send_id = str(uuid.uuid4())
        values: dict[str, Any] = {
            "id": send_id,
            "idempotency_key": request.idempotency_key,
            "created_at": at,
            "updated_at": at,
            "surface": request.origin.surface,
            "team_id": request.origin.team_id,
            "user_id": request.origin.user_id,
            "channel_id": request.origin.channel_id,
            "response_url": request.origin.response_url,
            "origin_thread_ts": request.origin.thread_ts,
            "via": request.via.value,
            "requested_sender": request.sender,
            "refs": _refs(request.recipients),
            "text": request.text,
            "schedule_time": request.schedule_time,
            "schedule_tz": _zone_name(request.schedule_time),
            "state": SendState.PENDING.value,
            "attempts": 0,
            "next_attempt_at": due,
            "deadline_at": due + deadline,
            "private": False,
            "retry_notice_posted": False,
            "alert": _alert_json(request.alert),
            "fingerprint": request.alert.fingerprint if request.alert else None,
        }
        if not await self._insert_once(sends, "idempotency_key", values):
            return None
        return SendRecord(
            id=send_id, request=request, state=SendState.PENDING, created_at=at, deadline_at=due + deadline
        )

    async def _insert_once(self, table: sa.Table, key: str, values: dict[str, Any]) -> bool:
        """Insert a row unless one with the same ``key`` exists (False then).

        Concurrent calls share one multi-row insert and one commit (group commit), on the intake connections:
        under a burst, acks wait for one round trip instead of queueing for the database one by one.
        """
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(table.name, []).append((values, done))
        flusher = self._flushers.get(table.name)
        if flusher is None or flusher.done():
            self._flushers[table.name] = asyncio.create_task(self._flush(table, key))
        return await done

    async def _flush(self, table: sa.Table, key: str) -> None:
        while self._pending.get(table.name):
            batch, self._pending[table.name] = self._pending[table.name], []
            statement = (
                self._insert(table)
                .values([values for values, _ in batch])
                .on_conflict_do_nothing(index_elements=[key])
                .returning(table.c.id)
            )
            try:
                async with self._begin(intake=True) as conn:
                    inserted = set((await conn.execute(statement)).scalars())
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for values, done in batch:
                if not done.done():
                    done.set_result(values["id"] in inserted)

    # ------------------------------------------------------------ the outbox

    def _due(self, at: datetime) -> sa.ColumnElement[bool]:
        work = sa.or_(
            sa.and_(
                sa.or_(
                    sends.c.state == SendState.PENDING.value,
                    sa.and_(sends.c.state.in_(FINAL_STATES), sends.c.posted_at.is_(None)),
                ),
                sends.c.next_attempt_at <= at,
            ),
            sa.and_(sends.c.card_due_at <= at, sends.c.posted_at.is_not(None)),  # new statuses for the result message
        )
        free = sa.or_(sends.c.lease_until.is_(None), sends.c.lease_until < at)
        return sa.and_(work, free)

    async def claim(self, worker_id: str, limit: int, lease: timedelta) -> list[SendRecord]:
        """Lease up to ``limit`` due rows to this worker, in one statement.

        ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING *`` on PostgreSQL: concurrent workers
        skip each other's rows instead of waiting. SQLite has a single writer, so the plain subquery is atomic.
        """
        at = now()
        due = (
            sa.select(sends.c.id)
            .where(self._due(at))
            .order_by(sends.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        statement = (
            sends.update()
            .where(sends.c.id.in_(due))
            .values(claimed_by=worker_id, lease_until=at + lease, updated_at=at)
            .returning(*sends.c)
        )
        async with self._begin() as conn:
            rows = (await conn.execute(statement)).all()
        return sorted((_record(r) for r in rows), key=lambda r: r.created_at)

    async def _write(self, statement: sa.Update) -> int:
        """Run an UPDATE in the next group commit; return the number of rows it changed.

        Workers finishing at the same moment share one transaction and one commit instead of one each.
        """
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._writes.append((statement, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._flush_writes())
        return await done

    async def _flush_writes(self) -> None:
        while self._writes:
            batch, self._writes = self._writes, []
            try:
                async with self._begin() as conn:
                    counts = [(await conn.execute(statement)).rowcount for statement, _ in batch]
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, done), count in zip(batch, counts, strict=True):
                if not done.done():
                    done.set_result(count)

    async def update(self, send_id: str, worker_id: str | None = None, **values: Any) -> bool:
        """Set columns of one row; with ``worker_id``, only while this worker holds the row."""
        condition = sends.c.id == send_id
        if worker_id is not None:
            condition = sa.and_(condition, sends.c.claimed_by == worker_id)
        return await self._write(sends.update().where(condition).values(updated_at=now(), **values)) == 1

    async def start_sending(self, send_id: str, worker_id: str, lease: timedelta, **values: Any) -> bool:
        """pending → sending (with ``values`` learnt on the way), committed before D7 is called.

        False if this worker lost the row.
        """
        at = now()
        statement = (
            sends.update()
            .where(
                sends.c.id == send_id,
                sends.c.state == SendState.PENDING.value,
                sends.c.claimed_by == worker_id,
            )
            .values(
                state=SendState.SENDING.value,
                attempts=sends.c.attempts + 1,
                lease_until=at + lease,
                updated_at=at,
                **values,
            )
        )
        return await self._write(statement) == 1

    async def renew(self, worker_id: str, ids: Sequence[str], lease: timedelta) -> None:
        """Keep the leases of rows this worker is still working on."""
        if not ids:
            return
        async with self._begin() as conn:
            await conn.execute(
                sends.update()
                .where(sends.c.id.in_(list(ids)), sends.c.claimed_by == worker_id)
                .values(lease_until=now() + lease)
            )

    async def release(self, send_id: str, worker_id: str) -> None:
        """Let another worker (or this one, later) take the row."""
        await self.update(send_id, worker_id, claimed_by=None, lease_until=None)

    async def recover(self, *, everything: bool) -> int:
        """Rows left in ``sending`` by a dead process become ``unknown`` (never resent).

        ``everything``: this process is the only one (SQLite), so every ``sending`` row is orphaned; otherwise
        only those whose lease ran out.
        """
        at = now()
        condition = sends.c.state == SendState.SENDING.value
        if not everything:
            condition = sa.and_(condition, sends.c.lease_until < at)
        async with self._begin() as conn:
            result = await conn.execute(
                sends.update()
                .where(condition)
                .values(
                    state=SendState.UNKNOWN.value,
                    error_kind="D7OutcomeUnknownError",
                    error_message="the bot stopped while D7 was being called; the text may or may not have gone out",
                    claimed_by=None,
                    lease_until=None,
                    finished_at=at,
                    updated_at=at,
                )
            )
            if everything:
                await conn.execute(
                    sends.update().where(sends.c.claimed_by.is_not(None)).values(claimed_by=None, lease_until=None)
                )
        return int(result.rowcount)

    # ------------------------------------------------------------ reading

    async def get(self, send_id: str) -> SendRecord | None:
        async with self._connect() as conn:
            row = (await conn.execute(sa.select(sends).where(sends.c.id == send_id))).first()
        return _record(row) if row is not None else None

    async def backlog(self) -> int:
        """Intents not yet sent (pending), plus outcomes not yet told in Slack."""
        async with self._connect() as conn:
            query = sa.select(sa.func.count()).where(
                sa.or_(
                    sends.c.state.in_([SendState.PENDING.value, SendState.SENDING.value]),
                    sends.c.posted_at.is_(None),
                )
            )
            return int((await conn.execute(query)).scalar_one())

    async def audit(self, since: datetime | None = None) -> list[SendRecord]:
        query = sa.select(sends).order_by(sends.c.created_at)
        if since is not None:
            query = query.where(sends.c.created_at >= since)
        async with self._connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows]

    async def prune(self, before: datetime) -> int:
        """Delete finished intents older than ``before`` (with their delivery statuses and per-phone alert
        records), delivery reports received before then, and expired dedup and limit windows; those in flight are
        kept. Return how many sends were deleted."""
        old = sa.select(sends.c.id).where(
            sends.c.created_at < before,
            sends.c.state.in_(FINAL_STATES),
            sends.c.posted_at.is_not(None),
        )
        async with self._begin() as conn:
            await conn.execute(recipient_statuses.delete().where(recipient_statuses.c.send_id.in_(old)))
            await conn.execute(alert_deliveries.delete().where(alert_deliveries.c.send_id.in_(old)))
            result = await conn.execute(sends.delete().where(sends.c.id.in_(old)))
            await conn.execute(delivery_reports.delete().where(delivery_reports.c.received_at < before))
            at = sa.literal(min(before, now()), UTCDateTime())
            await conn.execute(alert_dedupe.delete().where(alert_dedupe.c.until < at))
            await conn.execute(alert_windows.delete().where(alert_windows.c.window_end < at))
        return int(result.rowcount)

    # ------------------------------------------------------------ alerts: dedup and per-phone limits

    async def lead_alert(self, fingerprint: str, send_id: str, window: timedelta) -> str:
        """Which send texts this alert: ``send_id`` when no send with the same fingerprint did within ``window``
        (or it is that send, asking again after a restart); otherwise the earlier send's id.

        One upsert (one round trip) under the fingerprint's row lock, so replicas racing on repeats agree on one
        leader.
        """
        at = now()
        insert = self._insert(alert_dedupe)
        over = alert_dedupe.c.until <= sa.literal(at, UTCDateTime())
        statement = (
            insert.values(fingerprint=fingerprint, leader_id=send_id, until=at + window)
            .on_conflict_do_update(
                index_elements=["fingerprint"],
                set_={
                    "leader_id": sa.case((over, insert.excluded.leader_id), else_=alert_dedupe.c.leader_id),
                    "until": sa.case((over, insert.excluded.until), else_=alert_dedupe.c.until),
                },
            )
            .returning(alert_dedupe.c.leader_id)
        )
        async with self._begin() as conn:
            return str((await conn.execute(statement)).scalar_one())

    async def release_alert(self, fingerprint: str, send_id: str) -> None:
        """The leader's text did not go out: the next repeat may be texted."""
        async with self._begin() as conn:
            await conn.execute(
                alert_dedupe.delete().where(
                    alert_dedupe.c.fingerprint == fingerprint, alert_dedupe.c.leader_id == send_id
                )
            )

    async def take_quota(
        self, send_id: str, rule: str, phones: Sequence[str], count: int, per: timedelta
    ) -> dict[str, tuple[bool, datetime]]:
        """Count one text per phone against the rule's per-phone limit; per phone: (held back?, window start).

        A phone's window starts with its first text and lasts ``per``; within it the first ``count`` alerts are
        texted and the rest held. Asked again for the same send (after a restart), it answers what it answered.
        """
        at = now()
        stamp = sa.literal(at, UTCDateTime())
        async with self._begin() as conn:
            known = (
                await conn.execute(
                    sa.select(alert_deliveries.c.phone, alert_deliveries.c.held, alert_deliveries.c.window_start).where(
                        alert_deliveries.c.send_id == send_id
                    )
                )
            ).all()
            if known:
                return {phone: (bool(held), start) for phone, held, start in known}
            taken: dict[str, tuple[bool, datetime]] = {}
            w = alert_windows.c
            expired, under = w.window_end <= stamp, w.sent < count
            for phone in sorted(set(phones)):  # one order everywhere: no deadlock between replicas
                insert = self._insert(alert_windows)
                statement = (
                    insert.values(rule=rule, phone=phone, window_start=at, window_end=at + per, sent=1, last_held=False)
                    .on_conflict_do_update(
                        index_elements=["rule", "phone"],
                        set_={
                            "window_start": sa.case((expired, stamp), else_=w.window_start),
                            "window_end": sa.case((expired, sa.literal(at + per, UTCDateTime())), else_=w.window_end),
                            "sent": sa.case((expired, 1), (under, w.sent + 1), else_=w.sent),
                            "last_held": sa.case((expired, sa.false()), (under, sa.false()), else_=sa.true()),
                        },
                    )
                    .returning(w.window_start, w.last_held)
                )
                start, held = (await conn.execute(statement)).one()
                taken[phone] = (bool(held), start)
            await conn.execute(
                alert_deliveries.insert(),
                [
                    {"send_id": send_id, "phone": p, "rule": rule, "window_start": st, "held": h, "created_at": at}
                    for p, (h, st) in taken.items()
                ],
            )
        return taken

    async def alert_windows_of(self, send_id: str) -> dict[str, datetime]:
        """For each phone this alert was held back for: the start of the window it was held in."""
        d = alert_deliveries.c
        query = sa.select(d.phone, d.window_start).where(d.send_id == send_id, d.held.is_(True))
        async with self._connect() as conn:
            return {phone: start for phone, start in (await conn.execute(query)).all()}

    async def held_alerts(self, rule: str, phone: str, window_start: datetime) -> list[SendRecord]:
        """The alerts held back for ``phone`` in one window of ``rule``, oldest first."""
        d = alert_deliveries.c
        query = (
            sa.select(sends)
            .join(alert_deliveries, d.send_id == sends.c.id)
            .where(d.rule == rule, d.phone == phone, d.window_start == window_start, d.held.is_(True))
            .order_by(sends.c.created_at)
        )
        async with self._connect() as conn:
            return [_record(r) for r in (await conn.execute(query)).all()]

    # ------------------------------------------------------------ delivery reports and statuses

    async def save_report(self, key: str, request_id: str, recipient: str, status: str, reason: str | None) -> bool:
        """Keep a delivery report (group-committed); False when this (message, status) was received before."""
        values = {
            "id": str(uuid.uuid4()),
            "report_key": key[:300],
            "request_id": request_id,
            "recipient": recipient,
            "status": status,
            "reason": reason,
            "received_at": now(),
        }
        return await self._insert_once(delivery_reports, "report_key", values)

    async def pending_reports(self, limit: int = 500, request_ids: Sequence[str] | None = None) -> list[sa.Row[Any]]:
        """Reports not applied yet (their send may not know its request_id yet), oldest first."""
        r = delivery_reports.c
        query = sa.select(delivery_reports).where(r.applied_at.is_(None), r.received_at > now() - REPORT_KEEP)
        if request_ids is not None:
            query = query.where(r.request_id.in_(list(request_ids)))
        async with self._connect() as conn:
            return list((await conn.execute(query.order_by(r.received_at).limit(limit))).all())

    async def mark_applied(self, report_ids: Sequence[str]) -> None:
        if report_ids:
            statement = delivery_reports.update().where(delivery_reports.c.id.in_(list(report_ids)))
            await self._write(statement.values(applied_at=now()))

    async def sends_by_request_id(self, request_ids: Sequence[str]) -> dict[str, SendRecord]:
        if not request_ids:
            return {}
        query = sa.select(sends).where(sends.c.request_id.in_(list(set(request_ids))))
        async with self._connect() as conn:
            return {
                r.request_id: r for r in (_record(row) for row in (await conn.execute(query)).all()) if r.request_id
            }

    async def apply_status(self, send_id: str, recipient: str, status: str, rank: int, reason: str | None) -> bool:
        """Record a recipient's status unless a status of the same or higher rank is known; True if it changed."""
        insert = self._insert(recipient_statuses)
        statement = (
            insert.values(
                send_id=send_id,
                recipient=recipient,
                status=status,
                rank=rank,
                reason=reason,
                notified=False,
                updated_at=now(),
            )
            .on_conflict_do_update(
                index_elements=["send_id", "recipient"],
                set_={
                    "status": insert.excluded.status,
                    "rank": insert.excluded.rank,
                    "reason": insert.excluded.reason,
                    "updated_at": insert.excluded.updated_at,
                },
                where=recipient_statuses.c.rank < insert.excluded.rank,
            )
            .returning(recipient_statuses.c.send_id)
        )
        async with self._begin() as conn:
            return (await conn.execute(statement)).first() is not None

    async def statuses(self, send_id: str) -> list[RecipientDelivery]:
        s = recipient_statuses.c
        query = sa.select(s.recipient, s.status, s.reason, s.notified).where(s.send_id == send_id)
        async with self._connect() as conn:
            rows = (await conn.execute(query)).all()
        return [RecipientDelivery(r.recipient, r.status, r.reason, bool(r.notified)) for r in rows]

    async def mark_notified(self, send_id: str, recipients: Sequence[str]) -> None:
        s = recipient_statuses.c
        statement = recipient_statuses.update().where(s.send_id == send_id, s.recipient.in_(list(recipients)))
        await self._write(statement.values(notified=True))

    async def card_due(self, send_id: str, *, final: bool) -> None:
        """The result message must show new statuses (``final``: every recipient's status is final)."""
        await self._write(
            sends.update().where(sends.c.id == send_id).values(card_due_at=now(), delivery_final=final or None)
        )

    async def card_done(self, send_id: str, worker_id: str, due_at: datetime) -> None:
        """The result message shows the statuses as of ``due_at`` (a newer report keeps it due)."""
        statement = (
            sends.update()
            .where(sends.c.id == send_id, sends.c.claimed_by == worker_id, sends.c.card_due_at == due_at)
            .values(card_due_at=None)
        )
        await self._write(statement)

    async def claim_stale(self, limit: int, after: timedelta, again: timedelta) -> list[SendRecord]:
        """Sends due a status look-up (accepted, not every recipient final) or an unknown-outcome note; each is
        marked looked-up in the same statement, so replicas never look one up twice at once."""
        at = now()
        oldest = at - STALE_GIVE_UP
        c = sends.c
        accepted = sa.and_(
            c.state == SendState.ACCEPTED.value,
            c.request_id.is_not(None),
            sa.not_(c.request_id.startswith("dry-run-")),
            c.delivery_final.is_not(True),
            sa.or_(c.reconciled_at.is_(None), c.reconciled_at < at - again),
        )
        unknown = sa.and_(c.state == SendState.UNKNOWN.value, c.reconciled_at.is_(None))
        stale = (
            sa.select(c.id)
            .where(
                sa.or_(accepted, unknown),
                c.posted_at.is_not(None),
                sa.func.coalesce(c.finished_at, c.created_at) < at - after,
                c.created_at > oldest,
            )
            .order_by(c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        statement = sends.update().where(c.id.in_(stale)).values(reconciled_at=at).returning(*sends.c)
        async with self._begin() as conn:
            rows = (await conn.execute(statement)).all()
        return [_record(r) for r in rows]

    # ------------------------------------------------------------ settings kept in the database

    async def get_setting(self, key: str) -> str | None:
        async with self._connect() as conn:
            value = (await conn.execute(sa.select(kv.c.value).where(kv.c.key == key))).scalar_one_or_none()
        return None if value is None else str(value)

    async def put_setting_once(self, key: str, value: str) -> str:
        """Store ``value`` unless ``key`` exists; return what is stored (first writer wins)."""
        insert = self._insert(kv)
        async with self._begin() as conn:
            await conn.execute(
                insert.values(key=key, value=value, updated_at=now()).on_conflict_do_nothing(index_elements=["key"])
            )
            return str((await conn.execute(sa.select(kv.c.value).where(kv.c.key == key))).scalar_one())
