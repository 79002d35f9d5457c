"""Verified phones (``PhoneVerifications``) on the database: one row per person, changed only by single statements
that check what they change (the open code, the time of the last note), so replicas racing on one person agree."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bot.domain.verification import BLOCK_FOR, MAX_WRONG_CODES, Verification
from bot.storage.database import Database
from bot.storage.schema import phone_verifications

_c = phone_verifications.c
_NO_CODE: dict[str, Any] = {"otp_id": None, "otp_phone": None, "otp_sent_at": None, "otp_expires_at": None}


def _verification(row: Any) -> Verification:
    return Verification(
        user_id=row.user_id,
        phone=row.phone,
        verified_at=row.verified_at,
        otp_id=row.otp_id,
        otp_phone=row.otp_phone,
        otp_sent_at=row.otp_sent_at,
        otp_expires_at=row.otp_expires_at,
        failures=row.failures,
        blocked_until=row.blocked_until,
        reminded_at=row.reminded_at,
    )


class SqlPhoneVerifications:
    """``PhoneVerifications`` on the ``phone_verifications`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def verified(self, user_ids: Sequence[str]) -> dict[str, str]:
        if not user_ids:
            return {}
        query = sa.select(_c.user_id, _c.phone).where(_c.user_id.in_(sorted(set(user_ids))), _c.phone.is_not(None))
        async with self._db.connect() as conn:
            return {r.user_id: r.phone for r in (await conn.execute(query)).all()}

    async def get(self, user_id: str) -> Verification | None:
        async with self._db.connect() as conn:
            row = (await conn.execute(sa.select(phone_verifications).where(_c.user_id == user_id))).first()
        return None if row is None else _verification(row)

    async def code_sent(self, user_id: str, phone: str, otp_id: str, at: datetime, expires_at: datetime) -> None:
        code = {"otp_id": otp_id, "otp_phone": phone, "otp_sent_at": at, "otp_expires_at": expires_at}
        statement = (
            self._db.insert(phone_verifications)
            .values(user_id=user_id, failures=0, **code)
            .on_conflict_do_update(index_elements=["user_id"], set_=code)
        )
        async with self._db.begin() as conn:
            await conn.execute(statement)

    async def confirmed(self, user_id: str, otp_id: str, at: datetime) -> str | None:
        # Every SET reads the row as it was: ``phone`` takes the number the code went to before it is cleared.
        statement = (
            phone_verifications.update()
            .where(_c.user_id == user_id, _c.otp_id == otp_id)
            .values(phone=_c.otp_phone, verified_at=at, failures=0, blocked_until=None, **_NO_CODE)
            .returning(_c.phone)
        )
        async with self._db.begin() as conn:
            row = (await conn.execute(statement)).first()
        return None if row is None else str(row.phone)

    async def wrong_code(self, user_id: str, otp_id: str, at: datetime) -> Verification:
        ours = sa.and_(_c.user_id == user_id, _c.otp_id == otp_id)
        counted = phone_verifications.update().where(ours).values(failures=_c.failures + 1).returning(*_c)
        async with self._db.begin() as conn:
            row = (await conn.execute(counted)).first()  # the row stays locked until the commit (PostgreSQL)
            if row is not None and row.failures >= MAX_WRONG_CODES:
                block = {"failures": 0, "blocked_until": at + BLOCK_FOR, **_NO_CODE}
                blocked = phone_verifications.update().where(_c.user_id == user_id).values(**block).returning(*_c)
                row = (await conn.execute(blocked)).first()
            if row is None:  # not the open code (any more): nothing counted
                row = (await conn.execute(sa.select(phone_verifications).where(_c.user_id == user_id))).first()
        return _verification(row) if row is not None else Verification(user_id)

    async def drop_code(self, user_id: str, otp_id: str) -> None:
        statement = phone_verifications.update().where(_c.user_id == user_id, _c.otp_id == otp_id).values(**_NO_CODE)
        async with self._db.begin() as conn:
            await conn.execute(statement)

    async def take_reminder(self, user_id: str, at: datetime, every: timedelta) -> bool:
        new = (
            self._db.insert(phone_verifications)
            .values(user_id=user_id, failures=0)
            .on_conflict_do_nothing(index_elements=["user_id"])
        )
        due = sa.or_(_c.reminded_at.is_(None), _c.reminded_at <= at - every)
        taken = phone_verifications.update().where(_c.user_id == user_id, due).values(reminded_at=at)
        async with self._db.begin() as conn:
            await conn.execute(new)
            return bool((await conn.execute(taken)).rowcount == 1)
