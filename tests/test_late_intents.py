"""An intent whose insert landed after its sender was told "not recorded" is never sent, by any replica: two
replicas (the real Intake, Pipeline and SQL send store each, on one database: SQLite, and PostgreSQL when
TEST_DATABASE_URL is set), one of which records late.

Until its recorder confirms having told the person "recorded", an intent is the recorder's alone; the recorder
refuses its own late ones; an intent whose recorder stopped before confirming it is refused by the other replica
once ``RECORDER_GONE`` has passed. Either way the person's conversation is told nothing was sent. (The bot records
with a recorder on PostgreSQL; on SQLite, one process, an insert whose caller gave up is not made: last test.)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.domain.sends import RECORDER_GONE, Refusal, RefusalKind, SendState
from bot.metrics import Metrics
from bot.sending import texts
from bot.sending.intake import Intake, NotRecorded
from bot.sending.pipeline import Pipeline
from bot.storage import Storage
from bot.storage.database import Database
from bot.storage.engine import create_engine, migrate
from bot.storage.sends import SqlSendStore
from tests.faults import lock_sqlite
from tests.harness import reset_postgres
from tests.memory import (
    FakeClock,
    FakeConversations,
    FakeDirectory,
    FakeGateway,
    MemoryAlertLedger,
    MemorySendStore,
)
from tests.test_pipeline import DEADLINE, LateRecording, command, sending_core

PG_URL = os.environ.get("TEST_DATABASE_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="TEST_DATABASE_URL is not set")
LEASE = timedelta(seconds=30)
WITHIN = 0.1  # the intake's deadline here (2 s in the bot)
LATE = 0.3  # when the insert lands


@dataclass
class Replica:
    """One process: its send store on the shared database, its intake and pipeline, what it said and sent."""

    worker: str
    sends: SqlSendStore
    intake: Intake
    pipeline: Pipeline
    conversations: FakeConversations
    gateway: FakeGateway

    async def run(self) -> list[str]:
        """One outbox round: claim what this worker may, move each on."""
        claimed = await self.sends.claim(self.worker, 10, LEASE)
        for record in claimed:
            await self.pipeline.handle(record)
        return [r.id for r in claimed]


def replica(worker: str, db: Database, clock: FakeClock, late: float | None = None) -> Replica:
    sends = SqlSendStore(db, clock)
    directory, conversations, gateway = FakeDirectory(), FakeConversations(), FakeGateway()
    recording = LateRecording(sends, late) if late is not None else sends  # type: ignore[arg-type]
    intake = Intake(recording, DEADLINE, lambda: None, within=WITHIN, recorder=worker)  # type: ignore[arg-type]
    pipeline = sending_core(
        sends,
        clock=clock,
        ledger=MemoryAlertLedger(clock, MemorySendStore(clock)),  # commands only: no alert is counted
        directory=directory,
        gateway=gateway,
        conversations=conversations,
        metrics=Metrics(),
        intake=intake,
    )
    return Replica(worker, sends, intake, pipeline, conversations, gateway)


@dataclass
class Two:
    slow: Replica  # its inserts land after its intake's deadline
    other: Replica
    clock: FakeClock


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_pg)])
async def two(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Two]:
    url = f"sqlite:///{tmp_path / 'bot.db'}" if request.param == "sqlite" else str(PG_URL)
    if request.param == "postgresql":
        await reset_postgres(url)
    engine = create_engine(url)
    await migrate(engine)
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    first, second = Database(engine), Database(engine)
    try:
        yield Two(replica("worker-a", first, clock, late=LATE), replica("worker-b", second, clock), clock)
    finally:
        await first.aclose()
        await second.aclose()
        await engine.dispose()


async def record_late(two: Two) -> str:
    """The slow replica's person is told "not recorded"; then the insert lands anyway. The send's id."""
    with pytest.raises(NotRecorded):
        await two.slow.intake.record(command("disk full"))
    await asyncio.sleep(LATE + 0.3)
    (late,) = await two.other.sends.audit()
    assert (late.state, late.recorded_by) == (SendState.PENDING, "worker-a")
    return late.id


async def test_a_late_insert_is_never_claimed_by_the_other_replica_and_its_recorder_refuses_it(two: Two) -> None:
    late = await record_late(two)

    assert await two.other.run() == []
    two.clock.advance(RECORDER_GONE - timedelta(seconds=1))  # the recorder is alive: it is still its own
    assert await two.other.run() == []
    assert await two.slow.run() == [late]

    stored = await two.other.sends.get(late)
    assert stored is not None
    assert (stored.state, stored.refusal) == (
        SendState.DENIED,
        Refusal(RefusalKind.UNRECORDED, (texts.database_did_not_answer(),)),
    )
    assert two.slow.gateway.calls == two.other.gateway.calls == []
    assert two.slow.conversations.methods == ["refuse"]  # "Not sent … Nothing was sent."
    assert two.other.conversations.methods == []


async def test_a_late_insert_whose_recorder_stopped_is_refused_by_the_other_replica(two: Two) -> None:
    late = await record_late(two)  # ... and the slow replica stops before its outbox looks at it

    two.clock.advance(RECORDER_GONE + timedelta(seconds=1))
    assert await two.other.run() == [late]

    stored = await two.other.sends.get(late)
    assert stored is not None
    assert (stored.state, stored.refusal) == (
        SendState.DENIED,
        Refusal(RefusalKind.UNRECORDED, (texts.recorder_stopped(),)),
    )
    assert two.slow.gateway.calls == two.other.gateway.calls == []
    assert two.other.conversations.methods == ["refuse"]


async def test_an_intent_recorded_in_time_is_confirmed_and_either_replica_sends_it_once(two: Two) -> None:
    record = await two.other.intake.record(command("in time"))
    assert record is not None

    assert await two.slow.run() == [record.id]  # not only its recorder's: confirmed before the ack
    assert await two.other.run() == []

    stored = await two.other.sends.get(record.id)
    assert stored is not None
    assert (stored.state, stored.recorded_by) == (SendState.ACCEPTED, None)
    assert [c.text for c in two.slow.gateway.calls] == ["in time"]
    assert two.other.gateway.calls == []


# ------------------------------------------------------------ SQLite: one process, no late insert at all


async def test_on_sqlite_an_insert_whose_caller_gave_up_never_lands_later(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    async with await Storage.open(f"sqlite:///{db}") as storage:
        intake = Intake(storage.sends, DEADLINE, lambda: None)  # the bot's on SQLite: 2 s, no recorder
        with lock_sqlite(db, 2.5):  # another process holds the write lock past both deadlines
            first = asyncio.create_task(intake.record(command("first", key="trigger:1")))
            await asyncio.sleep(0.1)
            # Queued behind the first insert: its own insert starts when the first one gives up, with 2 s of its
            # own, and would get the lock at 2.5 s, after its caller was told "not recorded" at 2.1 s.
            second = asyncio.create_task(intake.record(command("second", key="trigger:2")))
            for task in (first, second):
                with pytest.raises(NotRecorded):
                    await task
        await asyncio.sleep(2.0)

        assert await storage.sends.audit() == []
