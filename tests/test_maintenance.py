"""The bot's own maintenance never holds SQLite's write lock for long: a large ``audit prune`` runs in batches of
its own short transactions, so commands typed meanwhile are recorded (Slack's 3 s, the intake's 2 s)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.maintenance import fill_old_sends, lock_probe
from bot.storage import Storage, batches
from bot.storage.database import Database
from bot.storage.engine import create_engine, migrate
from bot.storage.schema import (
    alert_windows,
    budget_charges,
    budget_windows,
    delivery_reports,
    recipient_statuses,
    sends,
)
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import reset_postgres, running_app
from tests.test_database_faults import contents, timed_command

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("TEST_DATABASE_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="TEST_DATABASE_URL is not set")
OLD = 60_000  # one transaction for all of them held the lock ~0.7 s here (bench.maintenance: 2.5 s for 200,000)
COMMANDS = 8
LONGEST_HOLD = 0.25  # seconds; batches aim at 0.08 s (bot/storage/batches.py)


async def test_a_large_prune_holds_the_lock_briefly_and_commands_typed_meanwhile_are_recorded(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    db = tmp_path / "bot.db"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "DATABASE_URL": f"sqlite:///{db}"}
    async with running_app(slack, fake_d7, tmp_path) as app:
        fill_old_sends(db, OLD)
        answers = []
        with lock_probe(db) as waits:
            prune = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "bot", "audit", "prune", "--older-than", "1d"),  # as an operator runs it
                env=env,
                cwd=tmp_path,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                # A few, spaced out: about the database, not Slack's pace in one channel (1 post a second).
                while prune.returncode is None and len(answers) < COMMANDS:
                    answers.append(await timed_command(app, f"+14155550100 during the prune {len(answers)}"))
                    await asyncio.sleep(0.3)
                async with asyncio.timeout(60):
                    said = (await prune.communicate())[0].decode()
            finally:
                if prune.returncode is None:
                    prune.kill()
        await app.settle(30)

    assert said == f"deleted {OLD} finished send(s) older than 1d\n"
    assert len(waits) > 20
    assert max(waits) < LONGEST_HOLD, max(waits)  # the longest the bot could have waited for the lock
    assert len(answers) >= 4  # the prune ran while they came in
    assert all(took < 3 and answer == {} for took, answer in answers), answers  # recorded, none "could not record"
    assert sorted(contents(fake_d7)) == sorted(f"during the prune {i}" for i in range(len(answers)))


# ------------------------------------------------------------ batches end where one transaction ended


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_pg)])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = f"sqlite:///{tmp_path / 'bot.db'}" if request.param == "sqlite" else str(PG_URL)
    if request.param == "postgresql":
        await reset_postgres(url)
    engine = create_engine(url)
    await migrate(engine)
    yield engine
    await engine.dispose()


def send_row(i: int, at: datetime, state: str = "accepted", posted: bool = True) -> dict[str, object]:
    return {
        "id": f"s{i:04d}", "idempotency_key": f"k{i}", "created_at": at, "updated_at": at, "surface": "command",
        "team_id": "T0", "user_id": "U0", "channel_id": "C0", "via": "sms", "refs": [], "text": "old",
        "state": state, "attempts": 1, "next_attempt_at": at, "deadline_at": at, "private": False,
        "retry_notice_posted": False, "posted_at": at if posted else None,
    }  # fmt: skip


async def test_a_prune_in_many_small_batches_deletes_what_one_transaction_did(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = (("BATCH_ROWS", 3), ("BATCH_FLOOR", 2), ("BATCH_CEILING", 4), ("BATCH_PAUSE", 0.0), ("IN_LIST", 2))
    for name, value in small:
        monkeypatch.setattr(batches, name, value)
    old, new = datetime.now(UTC) - timedelta(days=100), datetime.now(UTC)
    rows = [send_row(i, old) for i in range(10)]  # old, finished, told: pruned
    rows += [send_row(10, old, state="pending"), send_row(11, old, posted=False), send_row(12, new)]  # kept
    ids = [str(r["id"]) for r in rows]
    async with engine.begin() as conn:
        await conn.execute(sends.insert(), rows)
        await conn.execute(
            recipient_statuses.insert(),
            [{"send_id": i, "recipient": "+1", "status": "delivered", "rank": 3, "notified": True, "updated_at": old}
             for i in ids],
        )  # fmt: skip
        await conn.execute(
            budget_charges.insert(),
            [{"send_id": i, "key": "u:U0", "window_start": old, "messages": 1, "created_at": old} for i in ids],
        )
        await conn.execute(
            delivery_reports.insert(),
            [{"id": f"r{n}", "report_key": f"rk{n}", "request_id": "q", "recipient": "+1", "status": "sent",
              "received_at": old if n < 7 else new} for n in range(9)],
        )  # fmt: skip
        await conn.execute(
            alert_windows.insert(),
            [{"rule": "r", "phone": f"+{n}", "window_start": old, "window_end": old if n < 5 else new + timedelta(1),
              "sent": 1, "last_held": False} for n in range(8)],
        )  # fmt: skip
        await conn.execute(
            budget_windows.insert(),
            [{"key": f"b{n}", "window_start": old, "window_end": old if n < 6 else new + timedelta(1), "used": 1,
              "last_taken": True} for n in range(7)],
        )  # fmt: skip

    async with Database(engine) as database:
        assert await Storage.on(database).prune(new - timedelta(days=90)) == 10

    async with engine.connect() as conn:
        left = {
            table.name: (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
            for table in (sends, recipient_statuses, budget_charges, delivery_reports, alert_windows, budget_windows)
        }
    assert left == {
        "sends": 3,
        "recipient_statuses": 3,
        "budget_charges": 3,
        "delivery_reports": 2,
        "alert_windows": 3,
        "budget_windows": 1,
    }
