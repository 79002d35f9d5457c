"""On-call overrides (``OnCallOverrides``) on the database: every take and give kept, one cut short when another
replaces it, so who was on call at a moment past never changes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from bot.domain.oncall import Override, in_force
from bot.storage.database import Database
from bot.storage.schema import UTCDateTime, oncall_overrides


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
