"""Texts phones sent back (``InboundLog``) and the opt-out list (``OptOutList``) on the database.

An inbound body is kept before it is answered; the same body again within the window is kept as a duplicate (a
unique digest, so two replicas receiving it at once keep it once). Handling it is leased, like the outbox's sends.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bot.domain.inbound import InboundRecord, OptOut, OptOutWay, Outcome
from bot.storage.database import Database, now
from bot.storage.schema import UTCDateTime, inbound, opt_outs


def _record(row: Any) -> InboundRecord:
    m = row._mapping
    return InboundRecord(
        id=m["id"],
        received_at=m["received_at"],
        raw=bytes(m["raw"]),
        outcome=Outcome(m["outcome"]),
        phone=m["phone"],
        text=m["text"],
        send_id=m["send_id"],
        note_ts=m["note_ts"],
        attempts=int(m["attempts"]),
    )


class SqlInboundLog:
    """``InboundLog`` on the database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def receive(self, raw: bytes, digest: str, window: timedelta) -> InboundRecord | None:
        at = now()
        c = inbound.c
        row = {"received_at": at, "raw": raw, "attempts": 0}
        kept = InboundRecord(id=str(uuid.uuid4()), received_at=at, raw=raw)
        async with self._db.begin() as conn:
            # An older copy no longer makes this one a duplicate: its digest is let go first.
            old = sa.literal(at - window, UTCDateTime())
            await conn.execute(
                inbound.update().where(c.dedupe_key == digest, c.received_at < old).values(dedupe_key=None)
            )
            statement = (
                self._db.insert(inbound)
                .values(id=kept.id, dedupe_key=digest, outcome=Outcome.PENDING.value, next_attempt_at=at, **row)
                .on_conflict_do_nothing(index_elements=["dedupe_key"])
                .returning(c.id)
            )
            if (await conn.execute(statement)).first() is not None:
                return kept
            duplicate = {"id": str(uuid.uuid4()), "outcome": Outcome.DUPLICATE.value, "next_attempt_at": None}
            await conn.execute(inbound.insert().values(**duplicate, **row))
        return None

    async def claim(self, limit: int, lease: timedelta) -> list[InboundRecord]:
        """Like the outbox's claim: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, SQLite's single writer otherwise."""
        at = now()
        c = inbound.c
        when = sa.literal(at, UTCDateTime())
        due = (
            sa.select(c.id)
            .where(c.next_attempt_at <= when, sa.or_(c.lease_until.is_(None), c.lease_until < when))
            .order_by(c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        statement = inbound.update().where(c.id.in_(due)).values(lease_until=at + lease).returning(inbound)
        async with self._db.begin() as conn:
            rows = (await conn.execute(statement)).all()
        return sorted((_record(r) for r in rows), key=lambda r: r.received_at)

    async def keep(self, record: InboundRecord, due: datetime | None, *, working: bool = False) -> None:
        values = {
            "outcome": record.outcome.value,
            "phone": record.phone,
            "text": record.text,
            "send_id": record.send_id,
            "note_ts": record.note_ts,
            "attempts": record.attempts,
            "next_attempt_at": due,
        }
        statement = inbound.update().where(inbound.c.id == record.id).values(**values)
        if not working:
            statement = statement.values(lease_until=None)
        async with self._db.begin() as conn:
            await conn.execute(statement)

    async def get(self, inbound_id: str) -> InboundRecord | None:
        async with self._db.connect() as conn:
            row = (await conn.execute(sa.select(inbound).where(inbound.c.id == inbound_id))).first()
        return _record(row) if row is not None else None

    async def replies_to(self, send_ids: Sequence[str]) -> dict[str, list[InboundRecord]]:
        if not send_ids:
            return {}
        c = inbound.c
        query = (
            sa.select(inbound)
            .where(c.send_id.in_(list(send_ids)), c.outcome == Outcome.REPLIED.value)
            .order_by(c.received_at.desc())
        )
        found: dict[str, list[InboundRecord]] = {}
        async with self._db.connect() as conn:
            for row in (await conn.execute(query)).all():
                record = _record(row)
                found.setdefault(record.send_id or "", []).append(record)
        return found


class SqlOptOuts:
    """``OptOutList`` on the database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def opted_out(self, phones: Sequence[str]) -> dict[str, OptOut]:
        if not phones:
            return {}
        query = sa.select(opt_outs).where(opt_outs.c.phone.in_(sorted(set(phones))))
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {r.phone: OptOut(r.phone, r.at, OptOutWay(r.way), r.by) for r in rows}

    async def opt_out(self, entry: OptOut) -> bool:
        values = {"phone": entry.phone, "at": entry.at, "way": entry.way.value, "by": entry.by}
        statement = (
            self._db.insert(opt_outs)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["phone"])
            .returning(opt_outs.c.phone)
        )
        async with self._db.begin() as conn:
            return (await conn.execute(statement)).first() is not None

    async def opt_in(self, phone: str) -> bool:
        async with self._db.begin() as conn:
            return bool((await conn.execute(opt_outs.delete().where(opt_outs.c.phone == phone))).rowcount == 1)

    async def listing(self, limit: int) -> list[OptOut]:
        query = sa.select(opt_outs).order_by(opt_outs.c.at.desc()).limit(limit)
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [OptOut(r.phone, r.at, OptOutWay(r.way), r.by) for r in rows]
