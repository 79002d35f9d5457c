"""``SendRecord``'s named transitions, each kept by one UPDATE guarded by the lease: only the worker that holds a
row (``claimed_by``) moves it on; another gets ``LeaseLost``. The record moves on in the domain first, and the
UPDATE writes what changed."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bot.domain.delivery import Delivery
from bot.domain.errors import D7Error
from bot.domain.sends import CARD_EVERY, Checked, LeaseLost, Outcome, Placement, Refusal, SendRecord, SendState
from bot.storage.schema import UTCDateTime, recipient_statuses, send_requests, sends
from bot.storage.sends.rows import checked_columns, error_columns, not_sent_reason, outcome_columns
from bot.storage.sends.table import SendTable


class SendTransitions(SendTable):
    """The transitions of ``SendQueue``: each returns the passed record moved on, as the row now is."""

    async def _change(self, record: SendRecord, *conditions: sa.ColumnElement[bool], **values: Any) -> None:
        """Write one transition's columns, only while this worker holds the row; ``LeaseLost`` if it does not."""
        if not await self._try(record, *conditions, **values):
            raise LeaseLost(record.id)

    async def _try(self, record: SendRecord, *conditions: sa.ColumnElement[bool], **values: Any) -> bool:
        """Like ``_change``; False when the row did not match (lost lease, or a condition no longer true)."""
        statement = (
            sends.update()
            .where(sends.c.id == record.id, sends.c.claimed_by == record.claimed_by, *conditions)
            .values(updated_at=self._clock(), **values)
        )
        return await self._db.write(statement) == 1

    async def deny(self, record: SendRecord, refusal: Refusal) -> SendRecord:
        new = record.deny(refusal, self._clock())
        await self._change(
            record,
            state=new.state.value,
            refusal_kind=refusal.kind.value,
            problems=list(refusal.problems),
            finished_at=new.finished_at,
        )
        return new

    async def deduplicate(self, record: SendRecord, first_id: str) -> SendRecord:
        new = record.deduplicate(first_id, self._clock())
        await self._change(
            record,
            state=new.state.value,
            rule=new.rule,
            sender=new.sender,
            duplicate_of=first_id,
            finished_at=new.finished_at,
        )
        return new

    async def bundle(self, record: SendRecord, checked: Checked) -> SendRecord:
        new = record.bundle(checked, self._clock())
        await self._change(record, state=new.state.value, finished_at=new.finished_at, **checked_columns(new))
        return new

    async def start(
        self, record: SendRecord, checked: Checked, placement: Placement, lease: timedelta
    ) -> SendRecord | None:
        new = record.start(checked, placement)
        started = await self._try(
            record,
            sends.c.state == SendState.PENDING.value,
            state=new.state.value,
            attempts=sends.c.attempts + 1,
            lease_until=self._clock() + lease,
            thread_ts=placement.thread_ts,
            private=placement.private,
            recorded_by=None,
            **checked_columns(new),
        )
        return new if started else None

    async def place(self, record: SendRecord, placement: Placement) -> SendRecord:
        await self._change(record, thread_ts=placement.thread_ts, private=placement.private)
        return record.place(placement)

    async def notice_retry(self, record: SendRecord) -> SendRecord:
        await self._try(record, retry_notice_posted=True)
        return record.notice_retry()

    async def defer(self, record: SendRecord, until: datetime, error: D7Error) -> SendRecord:
        new = record.defer(error)
        await self._change(
            record,
            state=new.state.value,
            next_attempt_at=until,
            claimed_by=None,
            lease_until=None,
            **error_columns(error),
        )
        return new

    async def finish(self, record: SendRecord, outcome: Outcome) -> SendRecord:
        new = record.finish(outcome, self._clock())
        if not outcome.parts:
            await self._change(record, state=new.state.value, finished_at=new.finished_at, **outcome_columns(outcome))
            return new
        # In several requests: in the same transaction, the later request ids (reports name them) and a "failed"
        # status for each phone that certainly got nothing, with the card due so that the thread says so.
        at = self._clock()
        numbers = tuple(n.e164 for n in new.checked.recipients) if new.checked is not None else ()
        not_sent = outcome.not_sent(numbers)
        columns = outcome_columns(outcome) | {"card_due_at": at if not_sent else None}
        statement = (
            sends.update()
            .where(sends.c.id == record.id, sends.c.claimed_by == record.claimed_by)
            .values(updated_at=at, state=new.state.value, finished_at=new.finished_at, **columns)
        )
        later = [{"request_id": p.request_id, "send_id": record.id} for p in outcome.parts[1:] if p.request_id]
        async with self._db.begin() as conn:
            if (await conn.execute(statement)).rowcount != 1:
                raise LeaseLost(record.id)
            if later:
                await conn.execute(self._db.insert(send_requests).values(later).on_conflict_do_nothing())
            if not_sent:
                rows = [
                    {
                        "send_id": record.id,
                        "recipient": number,
                        "status": Delivery.FAILED.value,
                        "rank": Delivery.FAILED.rank,
                        "reason": not_sent_reason(part),
                        "notified": False,
                        "updated_at": at,
                    }
                    for number, part in not_sent
                ]
                await conn.execute(self._db.insert(recipient_statuses).values(rows).on_conflict_do_nothing())
        return replace(new, card_due_at=columns["card_due_at"])

    async def told(self, record: SendRecord, result_ts: str | None) -> SendRecord:
        new = record.told(self._clock(), result_ts)
        await self._change(record, posted_at=new.posted_at, result_ts=result_ts, claimed_by=None, lease_until=None)
        return new

    async def later(self, record: SendRecord, until: datetime) -> SendRecord:
        new = record.later()
        # Never a row in 'sending' (its start may have landed although the caller saw it fail): it stays leased, so
        # that recovery settles it as unknown instead of it waiting for ever without a lease.
        not_sending = sends.c.state != SendState.SENDING.value
        await self._change(
            record, not_sending, attempts=new.attempts, next_attempt_at=until, claimed_by=None, lease_until=None
        )
        return new

    # ------------------------------------------------------------ the result message

    async def card_due(self, record: SendRecord, *, final: bool) -> SendRecord:
        """Whoever holds the row: a report marks it, it does not move it on.

        Coalesced as ``bot.domain.sends.card_due_at`` says, in one UPDATE: a card is rewritten about once per
        ``CARD_EVERY`` however fast reports come, and the last statuses always show (a report during a rewrite
        leaves the card due: ``card_shown`` clears only the due time it read)."""
        at = self._clock()
        again = at + CARD_EVERY
        due, now_, soon = sends.c.card_due_at, sa.literal(at, UTCDateTime()), sa.literal(again, UTCDateTime())
        waiting = sa.and_(due <= now_, sends.c.claimed_by.is_(None))  # no worker has it yet: it reads them all then
        when = sa.case((due.is_(None), now_), (waiting, due), (sa.and_(due > now_, due <= soon), due), else_=soon)
        statement = sends.update().where(sends.c.id == record.id)
        await self._db.write(statement.values(card_due_at=when, delivery_final=final or None))
        return record.card_due(at)  # as this worker saw the row; the row has the rule applied to its own state

    async def card_shown(self, record: SendRecord, due_at: datetime) -> SendRecord:
        shown = await self._try(record, sends.c.card_due_at == due_at, card_due_at=None)  # a newer status: still due
        return record.card_shown() if shown else record

    async def card_later(self, record: SendRecord, until: datetime) -> SendRecord:
        new = record.card_later(until)
        await self._change(record, card_due_at=new.card_due_at, claimed_by=None, lease_until=None)
        return new
