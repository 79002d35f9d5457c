"""On call on the database: overrides (``OnCallOverrides``), every take and give kept, one cut short when another
replaces it, so who was on call at a moment past never changes; and handoffs (``OnCallHandoffs``), each person's
stint noticed once whichever replica sees it first."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bot.domain.clock import utc_now
from bot.domain.oncall import Handoff, Override, Shift, in_force
from bot.storage.database import Database
from bot.storage.schema import UTCDateTime, oncall_handoffs, oncall_overrides


class SqlOnCallOverrides:
    """``OnCallOverrides`` on the database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def in_force(self, schedules: Sequence[str], at: datetime) -> dict[str, Override]:
        if not schedules:
            return {}
        c = oncall_overrides.c
        moment = sa.literal(at, UTCDateTime())
        query = sa.select(oncall_overrides).where(
            c.schedule.in_(sorted(set(schedules))), c.starts_at <= moment, c.ends_at > moment
        )
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        found: dict[str, list[Override]] = {}
        for r in rows:
            found.setdefault(r.schedule, []).append(Override(r.schedule, r.user_id, r.starts_at, r.ends_at, r.by))
        return {name: chosen for name, kept in found.items() if (chosen := in_force(kept, at)) is not None}

    async def replace(self, override: Override) -> None:
        c = oncall_overrides.c
        starts = sa.literal(override.starts, UTCDateTime())
        ours = c.schedule == override.schedule
        async with self._db.begin() as conn:
            await conn.execute(oncall_overrides.delete().where(ours, c.starts_at >= starts))
            await conn.execute(
                oncall_overrides.update().where(ours, c.ends_at > starts).values(ends_at=override.starts)
            )
            await conn.execute(
                oncall_overrides.insert().values(
                    id=str(uuid.uuid4()),
                    schedule=override.schedule,
                    user_id=override.user_id,
                    starts_at=override.starts,
                    ends_at=override.ends,
                    by=override.by,
                )
            )


class SqlOnCallHandoffs:
    """``OnCallHandoffs`` on the database: a stint's row is inserted by its first claim (the unique stint decides
    which replica), and taken over by another only once its claim ran out with something left to do."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(self, schedule: str, shift: Shift, at: datetime, lease: timedelta) -> Handoff | None:
        if shift.user_id is None:
            return None
        c = oncall_handoffs.c
        new_id = str(uuid.uuid4())
        until = at + lease
        stint = (c.schedule == schedule, c.user_id == shift.user_id, c.ends_at == sa.literal(shift.ends, UTCDateTime()))
        # The watcher asks about every schedule each round, and most find their stint as they left it (noticed, or
        # another worker's): a read answers those. Only a stint new here, or one to take over, opens a write (on
        # SQLite, the one write lock); that write checks again, as another replica may have been quicker.
        async with self._db.connect() as conn:
            seen = (await conn.execute(sa.select(oncall_handoffs).where(*stint))).one_or_none()
        if seen is not None and (_done(seen) or seen.claimed_until > at):
            return None
        async with self._db.begin() as conn:
            inserted = await conn.execute(
                self._db.insert(oncall_handoffs)
                .values(
                    id=new_id,
                    schedule=schedule,
                    user_id=shift.user_id,
                    starts_at=shift.starts,
                    ends_at=shift.ends,
                    attempts=0,
                    claimed_until=until,
                )
                .on_conflict_do_nothing(index_elements=["schedule", "user_id", "ends_at"])
            )
            if inserted.rowcount == 1:
                return Handoff(new_id, schedule, shift.user_id, shift.ends)
            row = (await conn.execute(sa.select(oncall_handoffs).where(*stint))).one_or_none()
            if row is None or _done(row):
                return None
            taken = await conn.execute(
                oncall_handoffs.update()
                .where(c.id == row.id, c.claimed_until <= sa.literal(at, UTCDateTime()))
                .values(claimed_until=until)
            )
            if taken.rowcount != 1:
                return None
        return Handoff(
            row.id,
            schedule,
            row.user_id,
            row.ends_at,
            row.noticed_at is not None,
            row.group_set_at is not None,
            row.attempts,
        )

    async def keep(self, handoff: Handoff, retry_at: datetime | None) -> None:
        c = oncall_handoffs.c
        done = utc_now()
        values: dict[str, object] = {"attempts": handoff.attempts, "claimed_until": retry_at or done}
        if handoff.noticed:
            values["noticed_at"] = sa.func.coalesce(c.noticed_at, sa.literal(done, UTCDateTime()))
        if handoff.group_set:
            values["group_set_at"] = sa.func.coalesce(c.group_set_at, sa.literal(done, UTCDateTime()))
        async with self._db.begin() as conn:
            await conn.execute(oncall_handoffs.update().where(c.id == handoff.id).values(**values))


def _done(row: sa.Row[Any]) -> bool:
    """Everything of the stint is done: the DM and the user group (each done or not asked for)."""
    return row.noticed_at is not None and row.group_set_at is not None
