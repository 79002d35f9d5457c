"""The send log: migrations keep rows, the claim query never hands one row to two workers, recovery turns only
orphaned 'sending' rows into 'unknown'. SQLite always; PostgreSQL when TEST_DATABASE_URL is set."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.errors import D7AuthError, D7InsufficientCreditError, D7OutcomeUnknownError
from bot.domain.models import (
    AlertInfo,
    AlertResolution,
    FiringAlert,
    Origin,
    RecipientRef,
    RefKind,
    SendRequest,
    Surface,
    Via,
)
from bot.domain.phone import PhoneNumber
from bot.domain.sends import Checked, Placement, SendState
from bot.storage import Storage
from bot.storage.database import Database
from bot.storage.engine import create_engine, current_revision, head_revision, migrate
from bot.storage.schema import sends
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import App, reset_postgres, running_app, sign, slash_command

PG_URL = os.environ.get("TEST_DATABASE_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="TEST_DATABASE_URL is not set")


def request(key: str, text: str = "hello") -> SendRequest:
    return SendRequest(
        via=Via.SMS,
        origin=Origin(Surface.COMMAND, "T0TEAM", "U0ALICE", "C0OPS", response_url="https://hooks.example/r"),
        recipients=(RecipientRef(RefKind.NUMBER, "+14155550100"),),
        text=text,
        idempotency_key=key,
    )


CHECKED = Checked("ops may page on-call", "ops-sms", "OpsAlert", (PhoneNumber("+14155550100"),), "hello")


def storage(engine: AsyncEngine) -> Storage:
    """The stores on ``engine`` (each call: a process of its own, racing the others)."""
    return Storage.on(Database(engine))


async def set_columns(engine: AsyncEngine, send_id: str, **values: object) -> None:
    """Put a row in a state for the test (as time, or another replica, would have left it)."""
    async with engine.begin() as conn:
        await conn.execute(sends.update().where(sends.c.id == send_id).values(**values))


async def test_schema_is_at_head_and_migrating_again_changes_nothing(engine: AsyncEngine) -> None:
    assert await current_revision(engine) == head_revision() == "0018"
    await migrate(engine)
    assert await current_revision(engine) == "0018"
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
    assert {"sends", "kv", "inbound", "opt_outs", "alembic_version"} <= tables


async def test_idempotency_key_is_unique(engine: AsyncEngine) -> None:
    store = storage(engine).sends
    first = await store.record(request("k1"), timedelta(minutes=15))
    again = await store.record(request("k1", "other text"), timedelta(minutes=15))

    assert first is not None
    assert again is None
    (only,) = await store.audit()
    assert (only.id, only.request.text) == (first.id, "hello")


async def test_concurrent_claims_never_share_a_row(engine: AsyncEngine) -> None:
    store = storage(engine).sends
    for i in range(30):
        await store.record(request(f"k{i}"), timedelta(minutes=15))

    batches = await asyncio.gather(*(store.claim(f"w{n}", 4, timedelta(seconds=60)) for n in range(10)))

    ids = [r.id for batch in batches for r in batch]
    assert len(ids) == len(set(ids)) == 30
    assert await store.claim("late", 10, timedelta(seconds=60)) == []  # all leased


async def test_concurrent_repeats_of_an_alert_agree_on_one_leader(engine: AsyncEngine) -> None:
    stores = [storage(engine).alerts for _ in range(10)]  # on PostgreSQL: ten connections racing
    ids = [f"send-{i}" for i in range(10)]

    leaders = await asyncio.gather(
        *(s.lead("fp-1", i, timedelta(minutes=10)) for s, i in zip(stores, ids, strict=True))
    )

    assert len(set(leaders)) == 1
    assert leaders[0] in ids
    assert await stores[0].lead("fp-1", leaders[0], timedelta(minutes=10)) == leaders[0]  # asked again
    await stores[0].release("fp-1", leaders[0])  # its text did not go out
    assert await stores[0].lead("fp-1", "send-late", timedelta(milliseconds=1)) == "send-late"
    await asyncio.sleep(0.01)  # the window is over: the next repeat leads again
    assert await stores[0].lead("fp-1", "send-later", timedelta(minutes=10)) == "send-later"


async def test_a_resolution_ends_the_latest_alert_of_its_own_rules_only(engine: AsyncEngine) -> None:
    store = storage(engine).sends
    origin = Origin(Surface.ALERT, "T0TEAM", "B0GRAFANA", "C0SHARED")

    def alert(key: str, rule: str, kind: Surface = Surface.ALERT, rules: tuple[str, ...] = ()) -> SendRequest:
        info: AlertInfo = (
            AlertResolution(rule=rule, identity="about-db-1", rules=rules)
            if kind is Surface.RESOLVED
            else FiringAlert(rule=rule, identity="about-db-1")
        )
        return replace(request(key), origin=replace(origin, surface=kind), alert=info)

    grafana = await store.record(alert("alert:C0SHARED:1", "grafana only"), timedelta(minutes=15))
    other = await store.record(alert("alert:C0SHARED:2", "any bot"), timedelta(minutes=15))
    assert grafana is not None
    assert other is not None
    await set_columns(engine, other.id, created_at=grafana.created_at + timedelta(seconds=1))  # the later one
    since = grafana.created_at - timedelta(days=1)

    async def latest(*rules: str) -> str | None:
        found = await store.latest_alert("C0SHARED", "about-db-1", since, rules)
        return found.id if found else None

    assert await latest("grafana only") == grafana.id  # not the later alert of another rule
    assert await latest("grafana only", "any bot") == other.id
    assert await latest("quiet") is None
    resolution = alert("resolved:C0SHARED:3", "any bot", Surface.RESOLVED, ("any bot", "grafana only"))
    await store.record(resolution, timedelta(minutes=15))
    kept = await store.by_key("resolved:C0SHARED:3")
    assert kept is not None
    assert kept.request.alert is not None
    assert kept.request.alert.ends == ("any bot", "grafana only")


async def test_per_phone_limit_holds_exactly_the_alerts_over_the_count(engine: AsyncEngine) -> None:
    stores = [storage(engine).alerts for _ in range(20)]
    phones = ["+14155550100", "+14155550101"]

    taken = await asyncio.gather(
        *(s.take_quota(f"alert-{i}", "storm", phones, 5, timedelta(hours=1)) for i, s in enumerate(stores))
    )

    for phone in phones:
        assert sorted(t[phone][0] for t in taken) == [False] * 5 + [True] * 15
        starts = {t[phone][1] for t in taken}
        assert len(starts) == 1  # one window per phone
    # Asked again for the same alert (a restart), the answer is the same and nothing more is counted.
    assert await stores[0].take_quota("alert-0", "storm", phones, 5, timedelta(hours=1)) == taken[0]
    for i, answer in enumerate(taken):  # what the thread reply reads back: the window of each held phone
        held = {phone: start for phone, (is_held, start) in answer.items() if is_held}
        assert await stores[0].held_windows(f"alert-{i}") == held


async def test_a_phone_added_between_two_asks_for_one_alert_is_counted_once(engine: AsyncEngine) -> None:
    ledger = storage(engine).alerts
    first = await ledger.take_quota("alert-1", "storm", ["+14155550100"], 1, timedelta(hours=1))

    again = await ledger.take_quota("alert-1", "storm", ["+14155550100", "+14155550101"], 1, timedelta(hours=1))

    assert again["+14155550100"] == first["+14155550100"]  # not counted twice
    assert again["+14155550101"][0] is False  # counted now: its first text of the window
    other = await ledger.take_quota("alert-2", "storm", ["+14155550100", "+14155550101"], 1, timedelta(hours=1))
    assert [held for held, _ in other.values()] == [True, True]  # each phone had its one text


async def test_errors_read_back_by_kind_also_as_older_versions_stored_them(engine: AsyncEngine) -> None:
    store = storage(engine).sends
    rows = {k: await store.record(request(k), timedelta(minutes=15)) for k in ("new", "old", "unknown")}
    ids = {k: r.id for k, r in rows.items() if r is not None}
    await set_columns(engine, ids["new"], state="failed", error_kind="auth", error_message="token refused")
    await set_columns(engine, ids["old"], state="failed", error_kind="D7InsufficientCreditError", error_message="$0")
    # Written by a version that knows a kind this one does not: an unknown outcome must stay unknown.
    await set_columns(engine, ids["unknown"], state="unknown", error_kind="from_the_future", error_message="?")

    errors = {r.request.idempotency_key: r.last_error for r in await store.audit()}

    assert isinstance(errors["new"], D7AuthError)
    assert isinstance(errors["old"], D7InsufficientCreditError)
    assert isinstance(errors["unknown"], D7OutcomeUnknownError)


async def test_an_unreadable_row_does_not_hold_up_the_others(engine: AsyncEngine) -> None:
    store = storage(engine).sends
    for key in ("broken", "fine"):
        await store.record(request(key), timedelta(minutes=15))
    broken, _ = await store.audit()
    await set_columns(engine, broken.id, surface="carrier-pigeon")

    claimed = await store.claim("w1", 10, timedelta(seconds=60))

    assert [r.request.idempotency_key for r in claimed] == ["fine"]


async def test_statuses_never_go_backwards_and_stale_sends_are_claimed_once(engine: AsyncEngine) -> None:
    store = storage(engine)
    record = await store.sends.record(request("k-status"), timedelta(minutes=15))
    assert record is not None
    old = datetime.now(UTC) - timedelta(minutes=20)
    await set_columns(engine, record.id, state="accepted", request_id="req-1", posted_at=old, finished_at=old)

    assert await store.deliveries.apply_status(record.id, "+14155550100", "delivered", 3, None)
    assert not await store.deliveries.apply_status(record.id, "+14155550100", "sent", 2, None)  # late: ignored
    assert not await store.deliveries.apply_status(record.id, "+14155550100", "delivered", 3, None)  # no change
    assert [s.status for s in await store.deliveries.statuses(record.id)] == ["delivered"]

    racing = await asyncio.gather(
        *(storage(engine).sends.claim_stale(10, timedelta(minutes=10), timedelta(hours=1)) for _ in range(5))
    )
    assert sorted(len(batch) for batch in racing) == [0, 0, 0, 0, 1]
    await store.sends.card_due(record, final=True)
    await set_columns(engine, record.id, reconciled_at=old - timedelta(hours=2))
    assert await store.sends.claim_stale(10, timedelta(minutes=10), timedelta(hours=1)) == []  # final: no look-ups


async def test_only_the_lease_holder_may_start_sending(engine: AsyncEngine) -> None:
    store = storage(engine).sends
    record = await store.record(request("k1"), timedelta(minutes=15))
    assert record is not None
    (claimed,) = await store.claim("w1", 5, timedelta(seconds=60))
    lease = timedelta(minutes=5)

    assert await store.start(replace(claimed, claimed_by="w2"), CHECKED, Placement(), lease) is None
    assert await store.start(claimed, CHECKED, Placement(), lease) is not None
    assert await store.start(claimed, CHECKED, Placement(), lease) is None  # no second send
    stored = await store.get(claimed.id)
    assert stored is not None
    assert (stored.state, stored.attempts) == (SendState.SENDING, 1)


async def test_recovery_marks_only_expired_sending_rows_unknown(engine: AsyncEngine) -> None:
    store = storage(engine).sends
    for key in ("dead", "alive", "waiting"):
        await store.record(request(key), timedelta(minutes=15))
    dead, alive, waiting = await store.claim("w1", 5, timedelta(seconds=60))
    await store.start(dead, CHECKED, Placement(), timedelta(minutes=5))
    await store.start(alive, CHECKED, Placement(), timedelta(minutes=5))
    await set_columns(engine, dead.id, lease_until=datetime.now(UTC) - timedelta(seconds=1))

    assert await store.recover(everything=False) == 1
    states = {r.request.idempotency_key: r.state for r in await store.audit()}
    assert states == {"dead": SendState.UNKNOWN, "alive": SendState.SENDING, "waiting": SendState.PENDING}

    assert await store.recover(everything=True) == 1  # a lone SQLite process owns everything
    assert (await store.get(alive.id)).state is SendState.UNKNOWN  # type: ignore[union-attr]
    assert (await store.get(waiting.id)).state is SendState.PENDING  # type: ignore[union-attr]


async def test_prune_deletes_only_old_finished_and_told_sends(engine: AsyncEngine) -> None:
    store = storage(engine)
    for key in ("old-done", "old-pending", "new-done"):
        await store.sends.record(request(key), timedelta(minutes=15))
    old_done, old_pending, new_done = await store.sends.audit()
    past = datetime.now(UTC) - timedelta(days=100)
    await set_columns(engine, old_done.id, created_at=past, state="accepted", posted_at=past)
    await set_columns(engine, old_pending.id, created_at=past)
    await set_columns(engine, new_done.id, state="accepted", posted_at=datetime.now(UTC))

    assert await store.prune(datetime.now(UTC) - timedelta(days=90)) == 1
    assert [r.request.idempotency_key for r in await store.sends.audit()] == ["old-pending", "new-done"]


async def test_settings_kept_in_the_database_are_written_once(engine: AsyncEngine) -> None:
    store = storage(engine).settings
    assert await store.get("report_secret") is None
    assert await store.put_once("report_secret", "first") == "first"
    assert await store.put_once("report_secret", "second") == "first"


async def test_a_setting_is_swapped_only_from_the_value_the_swapper_saw(engine: AsyncEngine) -> None:
    one, two = storage(engine).settings, storage(engine).settings  # two replicas
    assert await one.swap("warned", None, "yes")
    assert not await two.swap("warned", None, "yes")  # the other saw nothing too, and lost
    assert not await two.swap("warned", "no", "yes")
    assert await two.swap("warned", "yes", "no")
    assert await one.get("warned") == "no"


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=needs_pg)])
async def test_database_of_the_previous_schema_opens_and_keeps_its_rows(backend: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}" if backend == "sqlite" else str(PG_URL)
    if backend == "postgresql":
        await reset_postgres(url)
    engine = create_engine(url)
    try:
        await migrate(engine, "0001")
        old = datetime(2026, 1, 2, 3, 4, 5)  # naive UTC, as stored
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO sends (id, idempotency_key, created_at, updated_at, surface, team_id, user_id, "
                    "channel_id, via, refs, text, state, attempts, next_attempt_at, deadline_at, recipients, "
                    "request_id, posted_at, private, retry_notice_posted) VALUES (:id, :key, :at, :at, 'command', "
                    "'T0', 'U0', 'C0', 'sms', :refs, 'kept', 'accepted', 1, :at, :at, :recipients, 'r-1', :at, "
                    ":f, :f)"
                ),
                {
                    "id": "00000000-0000-0000-0000-000000000001",
                    "key": "trigger:old",
                    "at": old,
                    "refs": '[{"kind": "number", "value": "+14155550100", "label": null}]',
                    "recipients": '["+14155550100"]',
                    "f": False,
                },
            )
        await migrate(engine)

        assert await current_revision(engine) == head_revision()
        (kept,) = await storage(engine).sends.audit()
        assert (kept.request.text, kept.state, kept.request_id) == ("kept", SendState.ACCEPTED, "r-1")
        assert kept.created_at == old.replace(tzinfo=UTC)
        assert kept.recipients == ["+14155550100"]
        assert kept.outcome is not None
        assert kept.outcome.result is not None
        assert kept.outcome.result.created_at is None  # the column 0002 added
    finally:
        await engine.dispose()


@asynccontextmanager
async def two_instances(slack: FakeSlack, d7: FakeD7, tmp: Path) -> AsyncIterator[tuple[App, App]]:
    """Two bots (each with its own outbox worker) on one fresh PostgreSQL database."""
    assert PG_URL is not None
    await reset_postgres(PG_URL)
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    async with (
        running_app(slack, d7, tmp / "a", DATABASE_URL=PG_URL) as one,
        running_app(slack, d7, tmp / "b", DATABASE_URL=PG_URL) as two,
    ):
        yield one, two


@needs_pg
async def test_two_instances_on_one_postgres_receive_the_same_delivery_and_send_once(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    body = slash_command("/sms", "+14155550100 failover test", trigger_id="1337.9.same")
    headers = sign(body)
    async with two_instances(slack, fake_d7, tmp_path) as (one, two):
        responses = await asyncio.gather(*(app.post(body, headers=headers) for app in (one, two, one, two)))
        await asyncio.gather(one.settle(), two.settle())
        records = await one.relay.storage.sends.audit()

    assert [r.status_code for r in responses] == [200] * 4
    assert len(fake_d7.bodies("/messages/v1/send")) == 1
    assert [(r.state, r.request.idempotency_key) for r in records] == [(SendState.ACCEPTED, "trigger:1337.9.same")]
    assert len([p for p in slack.of("chat.postMessage") if p.get("thread_ts")]) == 1


@needs_pg
@pytest.mark.usefixtures("unpaced")
async def test_two_instances_share_a_burst_without_sending_any_twice(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    slack.relax_rates()  # about sharing the outbox, not Slack's pace (80 posts to #ops would take 80 s)
    async with two_instances(slack, fake_d7, tmp_path) as (one, two):
        await asyncio.gather(*((one, two)[i % 2].command("/sms", f"+14155550100 burst {i}") for i in range(40)))
        for _ in range(3):
            await asyncio.gather(one.settle(), two.settle())
        records = await one.relay.storage.sends.audit()

    contents = [b["messages"][0]["content"] for b in fake_d7.bodies("/messages/v1/send")]
    assert sorted(contents) == sorted(f"burst {i}" for i in range(40))
    assert all(r.state is SendState.ACCEPTED and r.posted_at for r in records)
