"""Budgets (``BudgetLedger``): one upsert per budget under its row lock, all in one transaction, so concurrent sends
on any number of replicas never overrun a budget together, and a send is counted once."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from bot.domain.budgets import Charge, Overrun, Usage, too_big
from bot.storage.database import Database, Rollback, now
from bot.storage.schema import UTCDateTime, budget_charges, budget_windows


class _Over(Rollback):
    def __init__(self, overrun: Overrun) -> None:
        self.overrun = overrun
        super().__init__()


class SqlBudgetLedger:
    """``BudgetLedger`` on the database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def charge(self, send_id: str, charges: Sequence[Charge], messages: int) -> Overrun | None:
        """Each budget's row is upserted in one order everywhere (no deadlock between replicas): a window that has
        ended starts again with this send; an open one takes it only if it fits. PostgreSQL re-reads a row it waited
        for before deciding, so two sends never both take the last message. The first that does not fit rolls
        the others back."""
        if not charges:
            return None
        at = now()
        stamp = sa.literal(at, UTCDateTime())
        w, c = budget_windows.c, budget_charges.c
        try:
            async with self._db.begin() as conn:
                counted = await conn.execute(sa.select(c.key).where(c.send_id == send_id).limit(1))
                if counted.first() is not None:
                    return None  # counted before a restart: not again (even if a budget shrank since)
                if (whole := too_big(list(charges), messages)) is not None:
                    raise _Over(whole)
                taken: list[dict[str, object]] = []
                for charge in sorted(charges, key=lambda charge: charge.key):
                    expired, fits = w.window_end <= stamp, w.used + messages <= charge.budget.messages
                    insert = self._db.insert(budget_windows)
                    statement = (
                        insert.values(
                            key=charge.key,
                            window_start=at,
                            window_end=at + charge.budget.per,
                            used=messages,
                            last_taken=True,
                        )
                        .on_conflict_do_update(
                            index_elements=["key"],
                            set_={
                                "window_start": sa.case((expired, stamp), else_=w.window_start),
                                "window_end": sa.case(
                                    (expired, sa.literal(at + charge.budget.per, UTCDateTime())), else_=w.window_end
                                ),
                                "used": sa.case((expired, messages), (fits, w.used + messages), else_=w.used),
                                "last_taken": sa.case((expired, sa.true()), (fits, sa.true()), else_=sa.false()),
                            },
                        )
                        .returning(w.window_start, w.window_end, w.used, w.last_taken)
                    )
                    start, end, used, fitted = (await conn.execute(statement)).one()
                    if not fitted:
                        raise _Over(Overrun(charge, int(used), messages, end))
                    taken.append(
                        {
                            "send_id": send_id,
                            "key": charge.key,
                            "window_start": start,
                            "messages": messages,
                            "created_at": at,
                        }
                    )
                await conn.execute(budget_charges.insert(), taken)
        except _Over as over:
            return over.overrun
        return None

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
