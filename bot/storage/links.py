"""``ActionLinkStore`` on the ``action_links`` table: each phone's link to an alert, made once per (send, phone)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from bot.domain.links import ActionLink, new_token
from bot.storage.database import Database
from bot.storage.schema import action_links


class SqlActionLinks:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def ensure(
        self, send_id: str, alert_key: str, phones: Sequence[str], at: datetime, expires_at: datetime
    ) -> dict[str, ActionLink]:
        """Each phone's link for this send: made now for the phones that have none, kept for those that have one
        (a send tried again carries the same links)."""
        insert = self._db.insert(action_links)
        async with self._db.begin() as conn:
            for phone in phones:
                row = {
                    "token": new_token(),
                    "send_id": send_id,
                    "alert_key": alert_key,
                    "phone": phone,
                    "form_token": new_token(),
                    "created_at": at,
                    "expires_at": expires_at,
                }
                await conn.execute(insert.values(**row).on_conflict_do_nothing(index_elements=["send_id", "phone"]))
            rows = (await conn.execute(sa.select(action_links).where(action_links.c.send_id == send_id))).all()
        return {row.phone: _link(row) for row in rows}

    async def of_send(self, send_id: str) -> dict[str, ActionLink]:
        async with self._db.connect() as conn:
            rows = (await conn.execute(sa.select(action_links).where(action_links.c.send_id == send_id))).all()
        return {row.phone: _link(row) for row in rows}

    async def find(self, token: str) -> ActionLink | None:
        async with self._db.connect() as conn:
            row = (await conn.execute(sa.select(action_links).where(action_links.c.token == token))).first()
        return None if row is None else _link(row)


def _link(row: Any) -> ActionLink:
    return ActionLink(
        token=row.token,
        send_id=row.send_id,
        alert_key=row.alert_key,
        phone=row.phone,
        form_token=row.form_token,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )
