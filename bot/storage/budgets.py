"""Budgets (``BudgetLedger``): the windows a group of sends counts against, locked and updated in one transaction, so
concurrent sends on any number of replicas never overrun a budget together, and a send is counted once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from bot.domain.budgets import Charge, Overrun, Usage, Window, take
from bot.storage.database import IN_LIST, Database, now
from bot.storage.schema import UTCDateTime, budget_charges, budget_windows

_Asked = tuple[str, Sequence[Charge], int]  # a send, the budgets it counts against, its billed messages
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # a window that ended long ago: a placeholder row to lock


class SqlBudgetLedger:
    """``BudgetLedger`` on the database."""

    def __init__(self, db: Database) -> None:
        self._db = db
        w = budget_windows.c
        # Built once, run with lists of parameters: one round trip for a whole group of sends.
        self._placeholders = self._db.insert(budget_windows).on_conflict_do_nothing(index_elements=["key"])
        self._windows = (
            sa.select(w.key, w.window_start, w.window_end, w.used)
            .where(w.key.in_(sa.bindparam("keys", expanding=True)))
            .order_by(w.key)
            .with_for_update()
        )
        self._update = (
            budget_windows.update()
            .where(w.key == sa.bindparam("k"))
            .values(
                window_start=sa.bindparam("s"), window_end=sa.bindparam("e"), used=sa.bindparam("u"), last_taken=True
            )
        )

    async def charge(self, send_id: str, charges: Sequence[Charge], messages: int) -> Overrun | None:
        """Sends charged at the same moment are counted together, in one transaction and one commit (group commit:
        three budgets per send cost one hot row's lock per group, not per send). The group's windows are locked
        in key order (no deadlock between replicas; PostgreSQL's ``FOR UPDATE``, SQLite's single writer), each
        send is decided in turn against them (``take``: all its budgets or none), and what changed is written
        back."""
        if not charges:
            return None
        result: Overrun | None = await self._db.grouped("budgets", (send_id, list(charges), messages), self._flush)
        return result

    async def _flush(self, items: list[tuple[_Asked, asyncio.Future[Any]]]) -> list[Overrun | None]:
        asked = [item for item, done in items if not done.done()]  # a caller that gave up is not counted
        at = now()
        results: dict[str, Overrun | None] = {}
        c = budget_charges.c
        async with self._db.begin() as conn:
            ids = sorted({send_id for send_id, _, _ in asked})
            counted: set[str] = set()
            for start in range(0, len(ids), IN_LIST):  # counted before a restart: not again
                query = sa.select(c.send_id).where(c.send_id.in_(ids[start : start + IN_LIST])).distinct()
                counted.update((await conn.execute(query)).scalars())
            keys = sorted({charge.key for send_id, charges, _ in asked if send_id not in counted for charge in charges})
            windows = await self._lock(conn, keys)
            before = dict(windows)
            taken: list[dict[str, object]] = []
            for send_id, charges, messages in asked:
                if send_id in counted or send_id in results:
                    results.setdefault(send_id, None)
                    continue
                results[send_id] = overrun = take(windows, charges, messages, at)
                if overrun is None:
                    taken.extend(
                        {
                            "send_id": send_id,
                            "key": key,
                            "window_start": windows[key].start,
                            "messages": messages,
                            "created_at": at,
                        }
                        for key in dict.fromkeys(charge.key for charge in charges)
                    )
            changed = [
                {"k": key, "s": w.start, "e": w.end, "u": w.used} for key, w in windows.items() if before.get(key) != w
            ]
            if changed:
                await conn.execute(self._update, changed)
            if taken:
                await conn.execute(budget_charges.insert(), taken)
        return [results.get(send_id) for (send_id, _, _), _ in items]

    async def _lock(self, conn: Any, keys: list[str]) -> dict[str, Window]:
        """Every window of ``keys``, locked in key order: a row is made first for a budget never used (an ended
        window, which ``take`` opens again). Pruning may delete an ended window between the two statements
        (PostgreSQL): its key is made and locked again."""
        windows: dict[str, Window] = {}
        for start in range(0, len(keys), IN_LIST):
            missing = keys[start : start + IN_LIST]
            for _ in range(3):
                placeholders = [
                    {"key": key, "window_start": _EPOCH, "window_end": _EPOCH, "used": 0, "last_taken": False}
                    for key in missing
                ]
                await conn.execute(self._placeholders, placeholders)
                for key, begun, end, used in (await conn.execute(self._windows, {"keys": missing})).all():
                    windows[key] = Window(begun, end, int(used))
                if not (missing := [key for key in missing if key not in windows]):
                    break
            else:
                raise RuntimeError("budget windows were deleted while being locked, three times over")
        return windows

    async def refund(self, send_id: str) -> None:
        """The send's charges are deleted first (with what they were), so two workers giving back the same send
        give it back once; windows are then updated in key order, as ``charge`` locks them."""
        w, c = budget_windows.c, budget_charges.c
        async with self._db.begin() as conn:
            deleted = budget_charges.delete().where(c.send_id == send_id).returning(c.key, c.window_start, c.messages)
            for key, start, messages in sorted((await conn.execute(deleted)).all()):
                await conn.execute(
                    budget_windows.update()
                    .where(w.key == key, w.window_start == sa.literal(start, UTCDateTime()))
                    .values(used=sa.case((w.used > messages, w.used - messages), else_=0))
                )

    async def usage(self, keys: Sequence[str]) -> dict[str, Usage]:
        w = budget_windows.c
        query = sa.select(w.key, w.used, w.window_end).where(
            w.key.in_(list(keys)), w.window_end > sa.literal(now(), UTCDateTime())
        )
        async with self._db.connect() as conn:
            return {key: Usage(int(used), end) for key, used, end in (await conn.execute(query)).all()}
