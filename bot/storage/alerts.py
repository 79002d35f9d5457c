"""Alert dedup and per-phone limits (``AlertLedger``): one upsert per question, so replicas agree."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa

from bot.domain.sends import SendRecord
from bot.storage.database import Database, now
from bot.storage.schema import UTCDateTime, alert_dedupe, alert_deliveries, alert_windows, sends
from bot.storage.sends import record_of


class SqlAlertLedger:
    """``AlertLedger`` on the database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def lead(self, fingerprint: str, send_id: str, window: timedelta) -> str:
        """One upsert (one round trip) under the fingerprint's row lock, so replicas racing on repeats agree on one
        leader; the same send asking again (after a restart) is still the leader."""
        at = now()
        insert = self._db.insert(alert_dedupe)
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
        async with self._db.begin() as conn:
            return str((await conn.execute(statement)).scalar_one())

    async def release(self, fingerprint: str, send_id: str) -> None:
        d = alert_dedupe.c
        async with self._db.begin() as conn:
            await conn.execute(alert_dedupe.delete().where(d.fingerprint == fingerprint, d.leader_id == send_id))

    async def take_quota(
        self, send_id: str, rule: str, phones: Sequence[str], count: int, per: timedelta
    ) -> dict[str, tuple[bool, datetime]]:
        """A phone's window starts with its first text and lasts ``per``; within it the first ``count`` alerts are
        texted and the rest held. Phones counted for this send before keep their answer; one not asked about before
        (its user group grew since) is counted now."""
        at = now()
        stamp = sa.literal(at, UTCDateTime())
        async with self._db.begin() as conn:
            d = alert_deliveries.c
            rows = (await conn.execute(sa.select(d.phone, d.held, d.window_start).where(d.send_id == send_id))).all()
            known = {phone: (bool(held), start) for phone, held, start in rows}
            new = sorted(set(phones) - set(known))  # one order everywhere: no deadlock between replicas
            if not new:
                return known
            taken: dict[str, tuple[bool, datetime]] = {}
            w = alert_windows.c
            expired, under = w.window_end <= stamp, w.sent < count
            for phone in new:
                insert = self._db.insert(alert_windows)
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
        return known | taken

    async def give_back(self, send_id: str) -> None:
        """Deleted first (with what they were), so two workers giving back the same send give it back once."""
        d, w = alert_deliveries.c, alert_windows.c
        async with self._db.begin() as conn:
            deleted = (
                alert_deliveries.delete().where(d.send_id == send_id).returning(d.rule, d.phone, d.window_start, d.held)
            )
            rows = (await conn.execute(deleted)).all()
            for rule, phone, start, held in sorted(rows):
                if held:
                    continue
                await conn.execute(
                    alert_windows.update()
                    .where(
                        w.rule == rule, w.phone == phone, w.window_start == sa.literal(start, UTCDateTime()), w.sent > 0
                    )
                    .values(sent=w.sent - 1)
                )

    async def hold(self, send_id: str, rule: str, phones: Sequence[str], window_start: datetime) -> None:
        if not phones:
            return
        at = now()
        rows = [
            {"send_id": send_id, "phone": p, "rule": rule, "window_start": window_start, "held": True, "created_at": at}
            for p in sorted(set(phones))
        ]
        statement = (
            self._db.insert(alert_deliveries).values(rows).on_conflict_do_nothing(index_elements=["send_id", "phone"])
        )
        async with self._db.begin() as conn:
            await conn.execute(statement)

    async def held_windows(self, send_id: str) -> dict[str, datetime]:
        d = alert_deliveries.c
        query = sa.select(d.phone, d.window_start).where(d.send_id == send_id, d.held.is_(True))
        async with self._db.connect() as conn:
            return {phone: start for phone, start in (await conn.execute(query)).all()}

    async def held_alerts(self, rule: str, phone: str, window_start: datetime) -> list[SendRecord]:
        d = alert_deliveries.c
        query = (
            sa.select(sends)
            .join(alert_deliveries, d.send_id == sends.c.id)
            .where(d.rule == rule, d.phone == phone, d.window_start == window_start, d.held.is_(True))
            .order_by(sends.c.created_at)
        )
        async with self._db.connect() as conn:
            return [record_of(r) for r in (await conn.execute(query)).all()]
