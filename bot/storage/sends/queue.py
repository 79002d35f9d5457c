"""The outbox (``SendQueue``): intents recorded once, leased to one worker at a time, recovered when their worker
died.

Intent first: a request is inserted (unique idempotency key) before the Slack ack, and only the outbox worker that
holds a row's lease may move it on (``transitions.py``). ``sending`` is written *before* D7 is called, so a process
that dies mid-send leaves a row that recovery turns into ``unknown`` rather than sending twice.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bot.domain.errors import D7OutcomeUnknownError
from bot.domain.models import SendRequest
from bot.domain.sends import RECORDER_GONE, SendRecord, SendState
from bot.storage.schema import send_requests, sends
from bot.storage.sends.rows import FINAL_STATES, error_columns, intent_row, record_of
from bot.storage.sends.transitions import SendTransitions

log = logging.getLogger("bot.storage")

STALE_GIVE_UP = timedelta(hours=24)  # delivery statuses are looked up this long after D7's answer
RECOVERED = "the bot stopped while D7 was being called; the text may or may not have gone out"


class SqlSendQueue(SendTransitions):
    """``SendQueue`` on the database."""

    async def record(
        self,
        request: SendRequest,
        deadline: timedelta,
        not_before: datetime | None = None,
        recorder: str | None = None,
    ) -> SendRecord | None:
        """Insert a pending intent (group-committed with the others arriving now); None for a duplicate key."""
        at = self._clock()
        due = max(at, not_before) if not_before is not None else at
        send_id = str(uuid.uuid4())
        row = intent_row(request, send_id, at, due, due + deadline, recorder)
        if not await self._db.insert_once(sends, "idempotency_key", row):
            return None
        return SendRecord(
            id=send_id,
            request=request,
            state=SendState.PENDING,
            created_at=at,
            deadline_at=due + deadline,
            recorded_by=recorder,
        )

    async def confirm(self, record: SendRecord) -> None:
        await self._db.write_keys(sends, "id", record.id, {"recorded_by": None})  # with the others confirmed now

    # ------------------------------------------------------------ leases

    @staticmethod
    def _due(at: datetime, worker_id: str) -> sa.ColumnElement[bool]:
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
        # Another process's intent that it has not confirmed: only once that process is presumed stopped.
        mine = sa.or_(
            sends.c.recorded_by.is_(None), sends.c.recorded_by == worker_id, sends.c.created_at < at - RECORDER_GONE
        )
        return sa.and_(work, mine, sa.or_(sends.c.lease_until.is_(None), sends.c.lease_until < at))

    async def claim(self, worker_id: str, limit: int, lease: timedelta) -> list[SendRecord]:
        """``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING *`` on PostgreSQL: concurrent workers
        skip each other's rows instead of waiting. SQLite has a single writer, so the plain subquery is atomic."""
        at = self._clock()
        due = (
            sa.select(sends.c.id)
            .where(self._due(at, worker_id))
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
        async with self._db.begin() as conn:
            rows = (await conn.execute(statement)).all()
        return sorted(_readable(rows), key=lambda r: r.created_at)

    async def renew(self, worker_id: str, send_ids: Sequence[str], lease: timedelta) -> None:
        if not send_ids:
            return
        async with self._db.begin() as conn:
            await conn.execute(
                sends.update()
                .where(sends.c.id.in_(list(send_ids)), sends.c.claimed_by == worker_id)
                .values(lease_until=self._clock() + lease)
            )

    async def release(self, record: SendRecord) -> None:
        await self._try(record, claimed_by=None, lease_until=None)

    async def recover(self, *, everything: bool) -> int:
        at = self._clock()
        condition = sends.c.state == SendState.SENDING.value
        if not everything:
            condition = sa.and_(condition, sends.c.lease_until < at)
        unknown = {**error_columns(D7OutcomeUnknownError(RECOVERED)), "state": SendState.UNKNOWN.value}
        async with self._db.begin() as conn:
            result = await conn.execute(
                sends.update()
                .where(condition)
                .values(**unknown, claimed_by=None, lease_until=None, finished_at=at, updated_at=at)
            )
            if everything:
                await conn.execute(
                    sends.update().where(sends.c.claimed_by.is_not(None)).values(claimed_by=None, lease_until=None)
                )
        return int(result.rowcount)

    async def claim_stale(self, limit: int, after: timedelta, again: timedelta) -> list[SendRecord]:
        at = self._clock()
        c = sends.c
        accepted = sa.and_(
            c.state == SendState.ACCEPTED.value,
            c.request_id.is_not(None),
            c.dry_run.is_not(True),
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
                sa.func.coalesce(c.finished_at, c.created_at) > at - STALE_GIVE_UP,
            )
            .order_by(c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        statement = sends.update().where(c.id.in_(stale)).values(reconciled_at=at).returning(*sends.c)
        async with self._db.begin() as conn:
            return [record_of(r) for r in (await conn.execute(statement)).all()]

    # ------------------------------------------------------------ reading

    async def backlog(self) -> int:
        pending = [SendState.PENDING.value, SendState.SENDING.value]
        return await self._count(
            sa.select(sa.func.count()).where(sa.or_(sends.c.state.in_(pending), sends.c.posted_at.is_(None)))
        )

    async def stuck(self) -> int:
        c = sends.c
        return await self._count(
            sa.select(sa.func.count()).where(c.state == SendState.SENDING.value, c.lease_until < self._clock())
        )

    async def oldest_due(self) -> datetime | None:
        """The claim's due work, less refreshes of result messages (their next_attempt_at is not when they fell due)."""
        at = self._clock()
        c = sends.c
        waiting = sa.or_(c.state == SendState.PENDING.value, sa.and_(c.state.in_(FINAL_STATES), c.posted_at.is_(None)))
        unleased = sa.or_(c.lease_until.is_(None), c.lease_until < at)
        query = sa.select(sa.func.min(c.next_attempt_at)).where(waiting, c.next_attempt_at <= at, unleased)
        async with self._db.connect() as conn:
            oldest: datetime | None = (await conn.execute(query)).scalar_one()
        return oldest

    async def by_request_ids(self, request_ids: Sequence[str]) -> dict[str, SendRecord]:
        """The send of each request id: its first request's (``sends.request_id``) or a later one's."""
        if not request_ids:
            return {}
        wanted = list(set(request_ids))
        records = await self._all(sa.select(sends).where(sends.c.request_id.in_(wanted)))
        found = {r.request_id: r for r in records if r.request_id}
        rest = [i for i in wanted if i not in found]
        if rest:
            r = send_requests.c
            asked = r.request_id.label("asked")
            query = sa.select(asked, sends).join(sends, sends.c.id == r.send_id).where(r.request_id.in_(rest))
            async with self._db.connect() as conn:
                rows = (await conn.execute(query)).all()
            for row in rows:
                found[row.asked] = record_of(row)
        return found


def _readable(rows: Sequence[sa.Row[Any]]) -> list[SendRecord]:
    """The rows as records; one that cannot be read is logged and left out, so that it does not hold up the others."""
    records = []
    for row in rows:
        try:
            records.append(record_of(row))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("send_id=%s cannot be read (%s); a person must look at it", row.id, type(exc).__name__)
    return records
