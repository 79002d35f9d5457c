"""The delivery sweep on the real storage: reports no send will ever match (a send whose D7 answer was lost has no
request_id; someone else's request) are kept but never crowd out the ones that match. SQLite always; PostgreSQL when
TEST_DATABASE_URL is set."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import cast

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.d7.reports import parse_report
from bot.domain.models import Origin, RecipientRef, RefKind, SendRequest, SendResult, SendStatus, Surface, Via
from bot.domain.phone import PhoneNumber
from bot.domain.ports import MessageGateway
from bot.domain.sends import Checked, Outcome, Placement, SendRecord
from bot.sending.deliveries import Deliveries
from bot.sending.telling import Teller
from bot.storage import Storage
from bot.storage.database import Database, now
from bot.storage.schema import delivery_reports

PG_URL = os.environ.get("TEST_DATABASE_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="TEST_DATABASE_URL is not set")

NUMBER = "+14155550100"
UNMATCHED = 600  # more than one sweep reads (500)


@pytest.fixture
async def storage(engine: AsyncEngine) -> AsyncIterator[Storage]:
    database = Database(engine)
    yield Storage.on(database)
    await database.aclose()


def sweeper(storage: Storage) -> Deliveries:
    """The sweep alone: applying reports tells nobody and asks D7 nothing."""
    return Deliveries(
        sends=storage.sends,
        reports=storage.deliveries,
        gateway=cast(MessageGateway, None),
        teller=cast(Teller, None),
        secret="report-path-secret",
        wake=lambda: None,
        parse=parse_report,
    )


async def sent(storage: Storage, key: str, request_id: str | None) -> SendRecord:
    """A send D7 answered with ``request_id`` (None: not answered yet)."""
    request = SendRequest(
        via=Via.SMS,
        origin=Origin(Surface.COMMAND, "T0TEAM", "U0ALICE", "C0OPS"),
        recipients=(RecipientRef(RefKind.NUMBER, NUMBER),),
        text="disk full on db-1",
        idempotency_key=key,
    )
    assert await storage.sends.record(request, timedelta(minutes=15)) is not None
    (claimed,) = await storage.sends.claim("w1", 1, timedelta(minutes=1))
    checked = Checked("ops may page on-call", "ops-sms", "OpsAlert", (PhoneNumber(NUMBER),), request.text)
    record = await storage.sends.start(claimed, checked, Placement("1700000000.000100"), timedelta(minutes=5))
    assert record is not None
    if request_id is None:
        return record
    return await answered(storage, record, request_id)


async def answered(storage: Storage, record: SendRecord, request_id: str) -> SendRecord:
    outcome = Outcome(result=SendResult(request_id, SendStatus.ACCEPTED, created_at=None))
    return await storage.sends.finish(record, outcome)


async def unmatched_reports(engine: AsyncEngine, count: int, age: timedelta) -> None:
    """``count`` reports received ``age`` ago for requests no send has."""
    at = now() - age
    rows = [
        {
            "id": str(uuid.uuid4()),
            "report_key": f"lost-{i}:delivered",
            "request_id": f"not-ours-{i}",
            "recipient": NUMBER,
            "status": "delivered",
            "received_at": at + timedelta(milliseconds=i),
        }
        for i in range(count)
    ]
    async with engine.begin() as conn:
        await conn.execute(delivery_reports.insert(), rows)


async def pending(engine: AsyncEngine) -> set[str]:
    r = delivery_reports.c
    async with engine.connect() as conn:
        return set((await conn.execute(sa.select(r.request_id).where(r.applied_at.is_(None)))).scalars())


async def test_unmatched_reports_do_not_starve_a_matching_one(engine: AsyncEngine, storage: Storage) -> None:
    await unmatched_reports(engine, UNMATCHED, age=timedelta(hours=1))  # older than the one that matches
    record = await sent(storage, "trigger:1", "req-ours")
    assert await storage.deliveries.save_report("m-1:delivered", "req-ours", NUMBER, "delivered", None)

    assert await sweeper(storage).apply() == 1  # one sweep

    (status,) = await storage.deliveries.statuses(record.id)
    assert (status.recipient, status.status) == (NUMBER, "delivered")
    assert len(await pending(engine)) == UNMATCHED  # kept: a later send may still match them


async def test_a_report_before_the_sends_answer_is_applied_as_soon_as_it_is_known_here(
    engine: AsyncEngine, storage: Storage
) -> None:
    await unmatched_reports(engine, UNMATCHED, age=timedelta(hours=1))
    record = await sent(storage, "trigger:1", None)  # D7 is still answering
    assert await storage.deliveries.save_report("m-1:delivered", "req-late", NUMBER, "delivered", None)
    deliveries = sweeper(storage)
    assert await deliveries.apply(["req-late"]) == 0  # what ``received`` has the loop do

    async with deliveries:  # its next sweep is 15 s away: only the request_id learnt here can apply it
        await answered(storage, record, "req-late")
        deliveries.request_id_known("req-late")
        for _ in range(200):
            if "req-late" not in await pending(engine):  # marked applied: its last step
                break
            await asyncio.sleep(0.01)

    assert [s.status for s in await storage.deliveries.statuses(record.id)] == ["delivered"]


async def test_the_sweep_applies_a_report_whose_send_another_replica_answered(
    engine: AsyncEngine, storage: Storage
) -> None:
    record = await sent(storage, "trigger:1", None)
    assert await storage.deliveries.save_report("m-1:delivered", "req-late", NUMBER, "delivered", None)
    await unmatched_reports(engine, UNMATCHED, age=timedelta(minutes=1))  # older than the one that will match
    assert await sweeper(storage).apply() == 0

    await answered(storage, record, "req-late")  # by a replica this one never hears from

    assert await sweeper(storage).apply() == 1


async def test_reports_older_than_they_are_kept_for_are_not_applied(engine: AsyncEngine, storage: Storage) -> None:
    record = await sent(storage, "trigger:1", "req-ours")
    assert await storage.deliveries.save_report("m-1:delivered", "req-ours", NUMBER, "delivered", None)
    async with engine.begin() as conn:
        await conn.execute(delivery_reports.update().values(received_at=now() - timedelta(days=3)))

    assert await sweeper(storage).apply() == 0
    assert await storage.deliveries.statuses(record.id) == []
