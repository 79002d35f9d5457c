"""Settings the bot keeps for itself in the database (``SettingsStore``), the same for every replica."""

from __future__ import annotations

import sqlalchemy as sa

from bot.storage.database import Database, now
from bot.storage.schema import kv


class SqlSettings:
    """``SettingsStore`` on the ``kv`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, key: str) -> str | None:
        async with self._db.connect() as conn:
            value = (await conn.execute(sa.select(kv.c.value).where(kv.c.key == key))).scalar_one_or_none()
        return None if value is None else str(value)

    async def put_once(self, key: str, value: str) -> str:
        insert = self._db.insert(kv)
        async with self._db.begin() as conn:
            await conn.execute(
                insert.values(key=key, value=value, updated_at=now()).on_conflict_do_nothing(index_elements=["key"])
            )
            return str((await conn.execute(sa.select(kv.c.value).where(kv.c.key == key))).scalar_one())

    async def swap(self, key: str, old: str | None, new: str) -> bool:
        async with self._db.begin() as conn:
            if old is None:
                statement = self._db.insert(kv).values(key=key, value=new, updated_at=now())
                result = await conn.execute(statement.on_conflict_do_nothing(index_elements=["key"]))
            else:
                result = await conn.execute(
                    kv.update().where(kv.c.key == key, kv.c.value == old).values(value=new, updated_at=now())
                )
            return bool(result.rowcount == 1)
