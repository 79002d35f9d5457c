"""The send log's contract: ``SendQueue``, ``SendViews`` and ``AlertLog`` behave alike in memory (``tests/memory.py``,
what the pipeline's tests run on), on SQLite and on PostgreSQL (when TEST_DATABASE_URL is set).

Every test runs once per store, through the ports only, with time in the test's hands (the same ``FakeClock`` is
given to the store). A transition must return the passed record moved on and leave the stored row saying the same
(``seen``); one made by a worker that lost the lease raises ``LeaseLost`` and changes nothing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.domain.alerts import AlertActivity
from bot.domain.errors import D7AuthError, D7Error, D7OutcomeUnknownError, D7UnavailableError
from bot.domain.models import (
    AlertInfo,
    AlertResolution,
    AlertSummary,
    EscalationStep,
    FiringAlert,
    Origin,
    RecipientRef,
    RefKind,
    SendRequest,
    SendResult,
    SendStatus,
    Surface,
    Via,
)
from bot.domain.phone import PhoneNumber
from bot.domain.ports import AlertLedger, SendStore
from bot.domain.sends import (
    CARD_EVERY,
    RECORDER_GONE,
    Checked,
    LeaseLost,
    Outcome,
    Placement,
    Refusal,
    RefusalKind,
    SendRecord,
    SendState,
)
from bot.storage.alerts import SqlAlertLedger
from bot.storage.database import Database
from bot.storage.engine import create_engine, migrate
from bot.storage.sends import RECOVERED, SqlSendStore
from tests.harness import reset_postgres
from tests.memory import FakeClock, MemoryAlertLedger, MemorySendStore

PG_URL = os.environ.get("TEST_DATABASE_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="TEST_DATABASE_URL is not set")

DEADLINE = timedelta(minutes=15)
LEASE = timedelta(seconds=60)
SEND_LEASE = timedelta(minutes=5)
NUMBER, OTHER = PhoneNumber("+14155550100"), PhoneNumber("+14155550101")
CHECKED = Checked("ops may page on-call", "ops-sms", "OpsAlert", (NUMBER,), "disk full on db-1")
THREAD = Placement("1700000000.000100")


@dataclass
class Stores:
    """One implementation of the three ports on empty storage; ``replica()``: another process on the same storage."""

    sends: SendStore
    ledger: AlertLedger  # what ``alert_activity`` counts as held
    clock: FakeClock
    replica: Callable[[], SendStore]


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=needs_pg)])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    # An hour ago: what the SQL alert ledger stamps with the real time (``alert_activity``'s held) is "since" then.
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1))
    if request.param == "memory":
        memory = MemorySendStore(clock)
        yield Stores(memory, MemoryAlertLedger(clock, memory), clock, lambda: memory)
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'bot.db'}"
    else:
        assert PG_URL is not None
        url = PG_URL
        await reset_postgres(url)
    engine = create_engine(url)
    await migrate(engine)
    databases = [Database(engine)]

    def replica() -> SendStore:
        databases.append(Database(engine))
        return SqlSendStore(databases[-1], clock)

    yield Stores(SqlSendStore(databases[0], clock), SqlAlertLedger(databases[0]), clock, replica)
    for database in databases:
        await database.aclose()
    await engine.dispose()


# ------------------------------------------------------------ requests and records


def command(
    key: str, *, user: str = "U0ALICE", channel: str = "C0OPS", surface: Surface = Surface.COMMAND
) -> SendRequest:
    return SendRequest(
        via=Via.SMS,
        origin=Origin(surface, "T0TEAM", user, channel, response_url="https://hooks.example/r"),
        recipients=(RecipientRef(RefKind.NUMBER, NUMBER.e164),),
        text="disk full on db-1",
        idempotency_key=key,
    )


def alert(
    key: str,
    *,
    rule: str = "prod critical",
    fingerprint: str = "fp-db-1",
    identity: str = "about-db-1",
    channel: str = "C0ALERTS",
    kind: Surface = Surface.ALERT,
) -> SendRequest:
    info: AlertInfo = FiringAlert(rule=rule, fingerprint=fingerprint, identity=identity, message={"ts": key})
    if kind is Surface.SUMMARY:
        info = AlertSummary(rule=rule)
    elif kind is Surface.RESOLVED:
        info = AlertResolution(rule=rule, identity=identity, message={"ts": key})
    elif kind is Surface.ESCALATION:
        info = EscalationStep(rule=rule)
    origin = Origin(kind, "T0TEAM", "B0GRAFANA", channel)
    return replace(command(key), origin=origin, text="[FIRING] disk full on db-1", alert=info)


def alert_checked(rule: str = "prod critical", held: tuple[PhoneNumber, ...] = ()) -> Checked:
    return Checked(rule, "ops-sms", "OpsAlert", (NUMBER,), "ALERT: disk full on db-1", held=held)


async def add(stores: Stores, request: SendRequest, not_before: datetime | None = None) -> SendRecord:
    """Record the intent one second after the previous one (so that "oldest first" has one answer)."""
    stores.clock.advance(timedelta(seconds=1))
    record = await stores.sends.record(request, DEADLINE, not_before)
    assert record is not None
    return record


async def claim_one(stores: Stores, worker: str = "w1", lease: timedelta = LEASE) -> SendRecord:
    (claimed,) = await stores.sends.claim(worker, 10, lease)
    return claimed


async def started(stores: Stores, request: SendRequest, checked: Checked = CHECKED) -> SendRecord:
    """Recorded, claimed by w1 and ``sending``."""
    await add(stores, request)
    record = await stores.sends.start(await claim_one(stores), checked, THREAD, SEND_LEASE)
    assert record is not None
    return record


async def told(stores: Stores, request: SendRequest, outcome: Outcome, checked: Checked = CHECKED) -> SendRecord:
    """Sent, ended with ``outcome``, and told in its thread (the lease let go)."""
    record = await stores.sends.finish(await started(stores, request, checked), outcome)
    return await stores.sends.told(record, "1700000000.000200")


def accepted(request_id: str = "req-1") -> Outcome:
    return Outcome(result=SendResult(request_id, SendStatus.ACCEPTED, created_at=None))


def _error(error: D7Error | None) -> tuple[Any, ...] | None:
    return None if error is None else (type(error).__name__, error.message, error.http_status, error.code)


def seen(record: SendRecord | None) -> dict[str, Any]:
    """Everything a record says, errors as (class, message, status, code): two records agree when this is equal."""
    assert record is not None
    said = {f.name: getattr(record, f.name) for f in fields(SendRecord)}
    outcome = record.outcome
    said["outcome"] = None if outcome is None else (outcome.result, _error(outcome.error))
    said["last_error"] = _error(record.last_error)
    return said


async def stored(stores: Stores, record: SendRecord) -> dict[str, Any]:
    return seen(await stores.sends.get(record.id))


def keys(records: list[SendRecord]) -> list[str]:
    return [r.request.idempotency_key for r in records]


# ------------------------------------------------------------ the queue: recording and leases


async def test_recording_is_idempotent_by_key_and_reads_back_as_asked(stores: Stores) -> None:
    request = command("trigger:1")
    first = await add(stores, request)

    again = await stores.sends.record(replace(request, text="other words"), DEADLINE)

    assert again is None
    assert (first.state, first.created_at, first.deadline_at) == (
        SendState.PENDING,
        stores.clock(),
        stores.clock() + DEADLINE,
    )
    assert await stored(stores, first) == seen(first)
    assert [r.id for r in await stores.sends.audit()] == [first.id]
    assert await stores.sends.get("no-such-send") is None


async def test_an_alert_request_reads_back_whole(stores: Stores) -> None:
    window = stores.clock() - timedelta(minutes=5)
    summary = AlertSummary(rule="prod critical", phone=NUMBER.e164, window_start=window)
    requests = [
        alert("alert:C0ALERTS:1"),
        replace(command("summary:1", surface=Surface.SUMMARY), alert=summary),
        replace(command("step:1", surface=Surface.WORKFLOW), step="Fx1", workflow="Wf1"),
    ]
    for request in requests:
        record = await add(stores, request)
        assert (await stored(stores, record))["request"] == request


async def test_an_intent_recorded_for_later_is_due_then_and_its_deadline_counts_from_then(stores: Stores) -> None:
    due = stores.clock() + timedelta(hours=1)
    later = await add(stores, alert("summary:C0ALERTS:1", kind=Surface.SUMMARY), not_before=due)

    assert later.deadline_at == due + DEADLINE
    assert await stores.sends.claim("w1", 10, LEASE) == []
    stores.clock.advance(timedelta(hours=1))
    assert [r.id for r in await stores.sends.claim("w1", 10, LEASE)] == [later.id]


async def test_an_intent_recorded_for_a_person_is_its_recorders_alone_until_confirmed(stores: Stores) -> None:
    stores.clock.advance(timedelta(seconds=1))
    mine = await stores.sends.record(command("trigger:1"), DEADLINE, recorder="w-recorder")
    assert mine is not None
    assert mine.recorded_by == "w-recorder"
    other = stores.replica()

    assert await other.claim("w-other", 10, LEASE) == []  # it may have told its sender "not recorded"
    stores.clock.advance(RECORDER_GONE - timedelta(seconds=1))
    assert await other.claim("w-other", 10, LEASE) == []  # still: the recorder may be confirming it
    await stores.sends.confirm(mine)
    (claimed,) = await other.claim("w-other", 10, LEASE)  # told "recorded": anyone's
    assert (claimed.id, claimed.recorded_by) == (mine.id, None)


async def test_the_recorder_claims_its_own_at_once_and_starting_it_confirms_it(stores: Stores) -> None:
    stores.clock.advance(timedelta(seconds=1))
    mine = await stores.sends.record(command("trigger:1"), DEADLINE, recorder="w-recorder")
    assert mine is not None

    (claimed,) = await stores.sends.claim("w-recorder", 10, LEASE)
    assert claimed.recorded_by == "w-recorder"
    record = await stores.sends.start(claimed, CHECKED, THREAD, SEND_LEASE)
    assert record is not None
    assert record.recorded_by is None
    assert await stored(stores, record) == seen(record)


async def test_an_unconfirmed_intent_goes_to_another_worker_once_its_recorder_is_presumed_stopped(
    stores: Stores,
) -> None:
    stores.clock.advance(timedelta(seconds=1))
    mine = await stores.sends.record(command("trigger:1"), DEADLINE, recorder="w-recorder")
    assert mine is not None
    stores.clock.advance(RECORDER_GONE + timedelta(seconds=1))

    (claimed,) = await stores.replica().claim("w-other", 10, LEASE)
    assert (claimed.id, claimed.recorded_by) == (mine.id, "w-recorder")  # which says: refuse it, do not send it


async def test_claim_leases_the_longest_due_first_and_gives_them_oldest_first(stores: Stores) -> None:
    soon = stores.clock() + timedelta(seconds=30)
    first = await add(stores, command("k-first"), not_before=soon + timedelta(seconds=20))  # due last
    second = await add(stores, command("k-second"), not_before=soon)
    third = await add(stores, command("k-third"))  # due at once
    stores.clock.advance(timedelta(minutes=1))

    batch = await stores.sends.claim("w1", 2, LEASE)

    assert [r.id for r in batch] == [second.id, third.id]  # the two due longest, oldest first
    assert [r.claimed_by for r in batch] == ["w1", "w1"]
    assert [seen(r) for r in batch] == [await stored(stores, r) for r in batch]
    assert [r.id for r in await stores.sends.claim("w2", 10, LEASE)] == [first.id]
    assert await stores.sends.claim("w3", 10, LEASE) == []  # all leased


async def test_concurrent_claims_never_share_a_row(stores: Stores) -> None:
    recorded = [(await add(stores, command(f"k{i}"))).id for i in range(20)]

    batches = await asyncio.gather(*(stores.replica().claim(f"w{n}", 4, LEASE) for n in range(10)))

    ids = [r.id for batch in batches for r in batch]
    assert len(ids) == len(set(ids))
    rest = [r.id for r in await stores.sends.claim("late", 100, LEASE)]  # any a claimer skipped while locked
    assert sorted(ids + rest) == sorted(recorded)


async def test_a_lease_that_ran_out_goes_to_another_worker_and_the_first_loses_the_send(stores: Stores) -> None:
    await add(stores, command("k1"))
    mine = await claim_one(stores, "w1")
    stores.clock.advance(LEASE - timedelta(seconds=1))
    assert await stores.sends.claim("w2", 10, LEASE) == []

    stores.clock.advance(timedelta(seconds=2))
    theirs = await claim_one(stores, "w2")

    assert theirs.id == mine.id
    assert await stores.sends.start(mine, CHECKED, THREAD, SEND_LEASE) is None
    with pytest.raises(LeaseLost):
        await stores.sends.deny(mine, Refusal(RefusalKind.DENIED, ("no",)))
    assert await stored(stores, theirs) == seen(theirs)


async def test_renew_extends_only_the_leases_its_worker_holds(stores: Stores) -> None:
    await add(stores, command("k1"))
    mine = await claim_one(stores, "w1")
    await stores.sends.renew("w2", [mine.id], timedelta(minutes=10))  # not w2's: nothing changes
    await stores.sends.renew("w1", [], timedelta(minutes=10))
    stores.clock.advance(LEASE + timedelta(seconds=1))
    assert [r.id for r in await stores.sends.claim("w2", 10, LEASE)] == [mine.id]  # w1's lease ran out

    await stores.sends.renew("w2", [mine.id], timedelta(minutes=10))
    stores.clock.advance(timedelta(minutes=9))
    assert await stores.sends.claim("w3", 10, LEASE) == []
    stores.clock.advance(timedelta(minutes=2))
    assert [r.id for r in await stores.sends.claim("w3", 10, LEASE)] == [mine.id]


async def test_release_lets_another_worker_take_it_at_once_but_only_from_its_holder(stores: Stores) -> None:
    await add(stores, command("k1"))
    mine = await claim_one(stores, "w1")

    await stores.sends.release(replace(mine, claimed_by="w2"))  # not w2's to let go
    assert await stores.sends.claim("w2", 10, LEASE) == []
    await stores.sends.release(mine)

    assert [r.id for r in await stores.sends.claim("w2", 10, LEASE)] == [mine.id]


async def test_recovery_turns_only_orphaned_sending_intents_unknown(stores: Stores) -> None:
    dead = await started(stores, command("k-dead"))
    stores.clock.advance(SEND_LEASE - timedelta(seconds=10))
    alive = await started(stores, command("k-alive"))
    waiting = await add(stores, command("k-waiting"))
    held = await claim_one(stores, "w2")
    assert held.id == waiting.id
    stores.clock.advance(timedelta(seconds=20))  # dead's lease ran out, alive's did not
    assert await stores.sends.stuck() == 1

    assert await stores.sends.recover(everything=False) == 1

    recovered = await stores.sends.get(dead.id)
    assert recovered is not None
    assert (recovered.state, recovered.claimed_by, recovered.finished_at) == (SendState.UNKNOWN, None, stores.clock())
    assert recovered.outcome is not None
    assert _error(recovered.outcome.error) == _error(recovered.last_error) == _error(D7OutcomeUnknownError(RECOVERED))
    assert [r.state for r in await stores.sends.audit()] == [SendState.UNKNOWN, SendState.SENDING, SendState.PENDING]
    assert await stores.sends.stuck() == 0

    assert await stores.sends.recover(everything=True) == 1  # the only process: whatever is in flight is orphaned
    after = {r.id: r for r in await stores.sends.audit()}
    assert (after[alive.id].state, after[alive.id].claimed_by) == (SendState.UNKNOWN, None)
    assert (after[waiting.id].state, after[waiting.id].claimed_by) == (SendState.PENDING, None)  # let go
    assert [r.id for r in await stores.sends.claim("w3", 10, LEASE)] == [dead.id, alive.id, waiting.id]


# ------------------------------------------------------------ the queue: transitions


async def test_start_goes_only_from_pending_and_only_by_the_lease_holder(stores: Stores) -> None:
    await add(stores, command("k1"))
    claimed = await claim_one(stores)

    assert await stores.sends.start(replace(claimed, claimed_by="w2"), CHECKED, THREAD, SEND_LEASE) is None
    sending = await stores.sends.start(claimed, CHECKED, THREAD, SEND_LEASE)
    assert sending is not None
    assert (sending.state, sending.attempts, sending.checked, sending.placement) == (
        SendState.SENDING,
        1,
        CHECKED,
        THREAD,
    )
    assert await stored(stores, sending) == seen(sending)
    assert await stores.sends.start(claimed, CHECKED, THREAD, SEND_LEASE) is None  # never a second send
    stores.clock.advance(LEASE + timedelta(seconds=1))
    assert await stores.sends.stuck() == 0  # starting leased it for as long as a send may take
    stores.clock.advance(SEND_LEASE)
    assert await stores.sends.stuck() == 1


async def test_a_send_moves_through_each_transition_as_returned_and_as_stored(stores: Stores) -> None:
    sending = await started(stores, command("k1"))
    placed = await stores.sends.place(sending, Placement("1700000000.000900"))
    noticed = await stores.sends.notice_retry(placed)
    assert await stored(stores, noticed) == seen(noticed)
    assert (noticed.placement.thread_ts, noticed.retry_noticed) == ("1700000000.000900", True)

    error = D7UnavailableError("D7 is down", http_status=503)
    deferred = await stores.sends.defer(noticed, stores.clock() + timedelta(seconds=10), error)
    assert (deferred.state, deferred.claimed_by, _error(deferred.last_error)) == (
        SendState.PENDING,
        None,
        _error(error),
    )
    assert await stored(stores, deferred) == seen(deferred)
    assert await stores.sends.claim("w2", 10, LEASE) == []  # due again only at ``until``

    stores.clock.advance(timedelta(seconds=10))
    again = await stores.sends.start(await claim_one(stores, "w2"), CHECKED, THREAD, SEND_LEASE)
    assert again is not None
    assert again.attempts == 2
    finished = await stores.sends.finish(again, accepted())
    assert (finished.state, finished.request_id, finished.finished_at) == (SendState.ACCEPTED, "req-1", stores.clock())
    assert _error(finished.last_error) == _error(error)  # the audit shows the attempt that failed
    assert await stored(stores, finished) == seen(finished)
    found = await stores.sends.by_request_ids(["req-1", "req-unknown", "req-1"])
    assert {request_id: seen(r) for request_id, r in found.items()} == {"req-1": await stored(stores, finished)}
    assert await stores.sends.by_request_ids([]) == {}

    done = await stores.sends.told(finished, "1700000000.000200")
    assert (done.posted_at, done.result_ts, done.claimed_by) == (stores.clock(), "1700000000.000200", None)
    assert await stored(stores, done) == seen(done)
    stores.clock.advance(timedelta(hours=1))
    assert await stores.sends.claim("w3", 10, LEASE) == []  # told: nothing left to do


async def test_an_ending_not_told_yet_stays_due_until_it_is(stores: Stores) -> None:
    failed = await stores.sends.finish(await started(stores, command("k1")), Outcome(error=D7AuthError("refused")))
    assert (failed.state, _error(failed.outcome.error if failed.outcome else None)) == (
        SendState.FAILED,
        _error(D7AuthError("refused")),
    )
    assert await stored(stores, failed) == seen(failed)
    later = await stores.sends.later(failed, stores.clock() + timedelta(seconds=30))  # Slack was down
    assert (later.attempts, later.claimed_by) == (2, None)
    assert await stored(stores, later) == seen(later)
    assert await stores.sends.claim("w2", 10, LEASE) == []
    stores.clock.advance(timedelta(seconds=30))

    claimed = await claim_one(stores, "w2")

    assert claimed.id == failed.id
    await stores.sends.told(claimed, None)
    stores.clock.advance(timedelta(hours=1))
    assert await stores.sends.claim("w3", 10, LEASE) == []


async def test_refusals_repeats_and_bundles_end_a_send_before_it_starts(stores: Stores) -> None:
    await add(stores, command("k-denied"))
    await add(stores, alert("alert:C0ALERTS:2"))
    await add(stores, alert("alert:C0ALERTS:3"))
    denied, repeat, bundled = await stores.sends.claim("w1", 10, LEASE)
    refusal = Refusal(RefusalKind.DENIED, ("#ops may not text that number",))

    moved = [
        await stores.sends.deny(denied, refusal),
        await stores.sends.deduplicate(repeat, "send-first"),
        await stores.sends.bundle(bundled, replace(alert_checked(), recipients=(), held=(NUMBER, OTHER))),
    ]

    assert [(r.state, r.finished_at) for r in moved] == [
        (SendState.DENIED, stores.clock()),
        (SendState.DEDUPLICATED, stores.clock()),
        (SendState.BUNDLED, stores.clock()),
    ]
    assert (moved[0].refusal, moved[1].duplicate_of, moved[2].held) == (
        refusal,
        "send-first",
        [NUMBER.e164, OTHER.e164],
    )
    assert [seen(r) for r in moved] == [await stored(stores, r) for r in moved]


async def test_a_worker_that_lost_the_lease_changes_nothing(stores: Stores) -> None:
    await add(stores, command("k1"))
    lost = await claim_one(stores, "w1")
    stores.clock.advance(LEASE + timedelta(seconds=1))
    holder = await claim_one(stores, "w2")
    before = await stored(stores, holder)
    error = D7UnavailableError("down")
    until = stores.clock() + timedelta(minutes=1)
    raising: list[Callable[[], Any]] = [
        lambda: stores.sends.deny(lost, Refusal(RefusalKind.DENIED, ())),
        lambda: stores.sends.deduplicate(lost, "send-first"),
        lambda: stores.sends.bundle(lost, CHECKED),
        lambda: stores.sends.place(lost, THREAD),
        lambda: stores.sends.defer(lost, until, error),
        lambda: stores.sends.finish(lost, accepted()),
        lambda: stores.sends.told(lost, None),
        lambda: stores.sends.later(lost, until),
        lambda: stores.sends.card_later(lost, until),
    ]

    for transition in raising:
        with pytest.raises(LeaseLost):
            await transition()
    assert await stores.sends.start(lost, CHECKED, THREAD, SEND_LEASE) is None
    await stores.sends.notice_retry(lost)  # said or not, it never raises
    await stores.sends.card_shown(lost, stores.clock())
    await stores.sends.release(lost)

    assert await stored(stores, holder) == before


async def test_later_never_lets_go_of_a_send_in_sending(stores: Stores) -> None:
    sending = await started(stores, command("k1"))

    with pytest.raises(LeaseLost):  # its start landed: recovery settles it as unknown, it is never resent
        await stores.sends.later(sending, stores.clock() + timedelta(seconds=5))

    assert await stored(stores, sending) == seen(sending)


# ------------------------------------------------------------ the queue: the result message ("card")


async def test_new_statuses_make_the_card_due_until_it_is_shown(stores: Stores) -> None:
    done = await told(stores, command("k1"), accepted())
    assert await stores.sends.claim("w1", 10, LEASE) == []

    due = await stores.sends.card_due(done, final=False)  # a report came; nobody holds the send

    assert due.card_due_at == stores.clock()
    assert await stored(stores, due) == seen(due)
    claimed = await claim_one(stores)
    assert due.card_due_at is not None
    shown = await stores.sends.card_shown(claimed, due.card_due_at)
    assert shown.card_due_at is None
    assert await stored(stores, shown) == seen(shown)
    await stores.sends.release(shown)
    stores.clock.advance(timedelta(hours=1))
    assert await stores.sends.claim("w1", 10, LEASE) == []


async def test_a_status_that_came_while_the_card_was_written_keeps_it_due(stores: Stores) -> None:
    done = await told(stores, command("k1"), accepted())
    first = (await stores.sends.card_due(done, final=False)).card_due_at
    assert first is not None
    claimed = await claim_one(stores)
    stores.clock.advance(timedelta(seconds=1))
    await stores.sends.card_due(done, final=True)  # another report meanwhile

    kept = await stores.sends.card_shown(claimed, first)

    assert kept == claimed
    # Due again, once CARD_EVERY has passed: the rewrite just made is not followed by another at once.
    assert (await stores.sends.get(done.id)).card_due_at == stores.clock() + CARD_EVERY  # type: ignore[union-attr]
    await stores.sends.release(claimed)
    assert await stores.sends.claim("w1", 10, LEASE) == []
    stores.clock.advance(CARD_EVERY)
    assert [r.id for r in await stores.sends.claim("w1", 10, LEASE)] == [done.id]


async def test_reports_coalesce_into_one_rewrite_per_card_every(stores: Stores) -> None:
    """Due and waiting for a worker: more reports keep it as it is. A Slack failure's wait is brought forward to
    CARD_EVERY by a new report, never prolonged; one due sooner keeps its time."""
    done = await told(stores, command("k1"), accepted())
    first = (await stores.sends.card_due(done, final=False)).card_due_at
    assert first == stores.clock()
    stores.clock.advance(timedelta(seconds=2))
    await stores.sends.card_due(done, final=False)
    assert (await stores.sends.get(done.id)).card_due_at == first  # type: ignore[union-attr]

    claimed = await claim_one(stores)
    await stores.sends.card_later(claimed, stores.clock() + timedelta(minutes=10))  # Slack failed
    await stores.sends.card_due(done, final=False)
    assert (await stores.sends.get(done.id)).card_due_at == stores.clock() + CARD_EVERY  # type: ignore[union-attr]
    stores.clock.advance(timedelta(seconds=1))
    await stores.sends.card_due(done, final=False)  # due within CARD_EVERY: kept
    assert (await stores.sends.get(done.id)).card_due_at == stores.clock() - timedelta(seconds=1) + CARD_EVERY  # type: ignore[union-attr]


async def test_a_card_slack_did_not_take_is_shown_again_later_by_any_worker(stores: Stores) -> None:
    done = await told(stores, command("k1"), accepted())
    await stores.sends.card_due(done, final=False)
    claimed = await claim_one(stores)

    later = await stores.sends.card_later(claimed, stores.clock() + timedelta(minutes=1))

    assert (later.card_due_at, later.claimed_by) == (stores.clock() + timedelta(minutes=1), None)
    assert await stored(stores, later) == seen(later)
    stores.clock.advance(timedelta(seconds=59))
    assert await stores.sends.claim("w2", 10, LEASE) == []
    stores.clock.advance(timedelta(seconds=1))
    assert [r.id for r in await stores.sends.claim("w2", 10, LEASE)] == [done.id]


# ------------------------------------------------------------ the queue: status look-ups, depth


async def test_stale_sends_are_looked_up_once_per_round_by_one_replica(stores: Stores) -> None:
    after, again = timedelta(minutes=10), timedelta(hours=1)
    looked_up = await told(stores, command("k-accepted"), accepted("req-1"))
    await told(stores, command("k-unknown"), Outcome(error=D7OutcomeUnknownError("lost")))
    final = await told(stores, command("k-final"), accepted("req-2"))
    dry = Outcome(result=SendResult("dry-run-1", SendStatus.ACCEPTED, created_at=None, dry_run=True))
    await told(stores, command("k-dry"), dry)
    await stores.sends.finish(await started(stores, command("k-untold")), accepted("req-3"))  # not told yet
    await stores.sends.card_due(final, final=True)  # every status is final: nothing to look up
    assert await stores.sends.claim_stale(10, after, again) == []  # too fresh
    stores.clock.advance(after + timedelta(seconds=1))

    racing = await asyncio.gather(*(stores.replica().claim_stale(10, after, again) for _ in range(5)))

    taken = [r for batch in racing for r in batch]
    assert sorted(keys(taken)) == ["k-accepted", "k-unknown"]
    assert [r.reconciled_at for r in taken] == [stores.clock()] * 2
    assert [seen(r) for r in taken] == [await stored(stores, r) for r in taken]
    stores.clock.advance(again + timedelta(seconds=1))
    assert [r.id for r in await stores.sends.claim_stale(10, after, again)] == [looked_up.id]  # unknown: noted once
    stores.clock.advance(timedelta(hours=24))
    assert await stores.sends.claim_stale(10, after, again) == []  # given up a day after D7's answer


async def test_backlog_counts_what_is_not_sent_or_not_told_and_stuck_what_a_dead_worker_left(stores: Stores) -> None:
    await told(stores, command("k-done"), accepted())
    await started(stores, command("k-sending"))
    await stores.sends.finish(await started(stores, command("k-untold")), accepted("req-2"))
    await add(stores, command("k-pending"))

    assert (await stores.sends.backlog(), await stores.sends.stuck()) == (3, 0)
    stores.clock.advance(SEND_LEASE + timedelta(seconds=1))
    assert (await stores.sends.backlog(), await stores.sends.stuck()) == (3, 1)  # the untold one is final


async def test_oldest_due_is_when_the_longest_waiting_work_no_worker_holds_became_due(stores: Stores) -> None:
    assert await stores.sends.oldest_due() is None
    await add(stores, command("k-later"), not_before=stores.clock() + timedelta(hours=1))  # not due yet
    assert await stores.sends.oldest_due() is None
    first = await add(stores, command("k-first"))
    second = await add(stores, command("k-second"))
    stores.clock.advance(timedelta(minutes=1))
    assert await stores.sends.oldest_due() == first.created_at  # nobody claimed it for a minute

    assert [r.id for r in await stores.sends.claim("w1", 1, LEASE)] == [first.id]
    assert await stores.sends.oldest_due() == second.created_at  # a worker holds the first
    await stores.sends.claim("w1", 10, LEASE)
    assert await stores.sends.oldest_due() is None
    stores.clock.advance(LEASE + timedelta(seconds=1))  # the worker died: its leases ran out
    assert await stores.sends.oldest_due() == first.created_at


# ------------------------------------------------------------ the read models


async def test_audit_lists_every_send_oldest_first_since_a_time(stores: Stores) -> None:
    first = await add(stores, command("k1"))
    second = await add(stores, alert("alert:C0ALERTS:1"))
    third = await add(stores, command("k3", user="U0BEN"))

    assert keys(await stores.sends.audit()) == ["k1", "alert:C0ALERTS:1", "k3"]
    assert [r.id for r in await stores.sends.audit(second.created_at)] == [second.id, third.id]
    assert [seen(r) for r in await stores.sends.audit()] == [seen(r) for r in (first, second, third)]


async def test_recent_of_lists_a_persons_own_sends_newest_first_without_alerts(stores: Stores) -> None:
    await add(stores, command("k1"))
    await add(stores, command("k2", surface=Surface.MODAL))
    await add(stores, command("k-ben", user="U0BEN"))
    await add(stores, command("k3", surface=Surface.WORKFLOW))
    for surface in (Surface.ALERT, Surface.SUMMARY, Surface.ESCALATION, Surface.RESOLVED):
        await add(
            stores, replace(alert(f"{surface}:1", kind=surface), origin=replace(command("x").origin, surface=surface))
        )

    assert keys(await stores.sends.recent_of("U0ALICE", 10)) == ["k3", "k2", "k1"]
    assert keys(await stores.sends.recent_of("U0ALICE", 2)) == ["k3", "k2"]
    assert await stores.sends.recent_of("U0NOBODY", 10) == []


async def test_counts_since_counts_by_channel_and_state_without_summaries(stores: Stores) -> None:
    await told(stores, command("k-old"), accepted("req-0"))
    since = stores.clock() + timedelta(seconds=1)
    await told(stores, command("k1"), accepted())
    await told(stores, command("k2"), accepted("req-2"))
    await add(stores, command("k3", channel="C0DEV"))
    await add(stores, alert("alert:C0ALERTS:1"))
    await add(stores, alert("summary:1", kind=Surface.SUMMARY))

    counts = sorted(await stores.sends.counts_since(since))

    assert counts == [("C0ALERTS", "pending", 1), ("C0DEV", "pending", 1), ("C0OPS", "accepted", 2)]


async def test_needing_a_person_lists_unknown_rejected_and_failed_newest_first(stores: Stores) -> None:
    await told(stores, command("k-old"), Outcome(error=D7OutcomeUnknownError("lost")))
    since = stores.clock() + timedelta(seconds=1)
    rejected = Outcome(result=SendResult("req-9", SendStatus.REJECTED, created_at=None))
    await told(stores, command("k-unknown"), Outcome(error=D7OutcomeUnknownError("lost")))
    await told(stores, command("k-fine"), accepted())
    await told(stores, command("k-rejected"), rejected)
    await told(stores, command("k-failed"), Outcome(error=D7AuthError("refused")))

    assert keys(await stores.sends.needing_a_person(since, 10)) == ["k-failed", "k-rejected", "k-unknown"]
    assert keys(await stores.sends.needing_a_person(since, 1)) == ["k-failed"]


async def test_alert_activity_sums_up_each_rule_since_a_time(stores: Stores) -> None:
    await told(stores, alert("alert:C0ALERTS:0"), accepted("req-0"), alert_checked())  # before ``since``
    since = stores.clock() + timedelta(seconds=1)
    await told(stores, alert("alert:C0ALERTS:1"), accepted("req-1"), alert_checked())
    await add(stores, alert("alert:C0ALERTS:2"))
    await add(stores, alert("alert:C0ALERTS:3"))
    await add(stores, alert("alert:C0ALERTS:4", rule="staging"))
    await add(stores, alert("summary:1", kind=Surface.SUMMARY))  # not an alert of its own
    held, repeat, refused, _ = await stores.sends.claim("w1", 10, LEASE)
    await stores.ledger.hold(held.id, "prod critical", [NUMBER.e164, OTHER.e164], since)  # quiet hours
    await stores.sends.bundle(held, replace(alert_checked(), recipients=(), held=(NUMBER, OTHER)))
    await stores.sends.deduplicate(repeat, "send-first")
    await stores.sends.deny(refused, Refusal(RefusalKind.INVALID, ("nobody to text",)))

    activity = sorted(await stores.sends.alert_activity(since), key=lambda a: a.rule)

    assert activity == [
        AlertActivity("prod critical", last_match=repeat.created_at, texted=1, held=2, repeats=1, refused=0),
        AlertActivity("staging", last_match=refused.created_at, texted=0, held=0, repeats=0, refused=1),
    ]


# ------------------------------------------------------------ the alert log


async def test_by_key_finds_the_send_recorded_under_a_key(stores: Stores) -> None:
    fired = await add(stores, alert("alert:C0ALERTS:1"))

    assert seen(await stores.sends.by_key("alert:C0ALERTS:1")) == seen(fired)
    assert await stores.sends.by_key("alert:C0ALERTS:2") is None


async def test_the_first_acknowledgement_wins_and_none_after_resolution(stores: Stores) -> None:
    fired = await add(stores, alert("alert:C0ALERTS:1"))
    held = await claim_one(stores)  # the outbox holds it: a person still acknowledges it
    stores.clock.advance(timedelta(seconds=5))

    acked = await stores.sends.acknowledge(fired, "U0ANA")

    assert acked is not None
    assert (acked.acked_by, acked.acked_at) == ("U0ANA", stores.clock())
    assert await stored(stores, acked) == seen(replace(acked, claimed_by="w1"))
    assert await stores.sends.acknowledge(fired, "U0BEN") is None
    assert (await stores.sends.get(fired.id)).acked_by == "U0ANA"  # type: ignore[union-attr]
    assert await stores.sends.deny(held, Refusal(RefusalKind.DENIED, ())) is not None  # the lease is untouched
    other = await add(stores, alert("alert:C0ALERTS:2", fingerprint="fp-2"))
    await stores.sends.mark_resolved(other)
    assert await stores.sends.acknowledge(other, "U0ANA") is None  # resolved: nothing to acknowledge
    person = await add(stores, command("k1"))
    assert await stores.sends.acknowledge(person, "U0ANA") is None  # not an alert


async def test_an_alert_is_resolved_once(stores: Stores) -> None:
    fired = await add(stores, alert("alert:C0ALERTS:1"))
    when = stores.clock()

    resolved = await stores.sends.mark_resolved(fired)
    stores.clock.advance(timedelta(minutes=1))
    again = await stores.sends.mark_resolved(fired)

    assert resolved is not None
    assert resolved.resolved_at == when
    assert again is None
    assert await stored(stores, fired) == seen(resolved)


async def test_acked_repeat_is_the_latest_acknowledged_unresolved_alert_of_its_rule(stores: Stores) -> None:
    old = await add(stores, alert("alert:C0ALERTS:0"))
    await stores.sends.acknowledge(old, "U0ANA")
    since = stores.clock() + timedelta(seconds=1)
    await add(stores, alert("alert:C0ALERTS:1"))  # not acknowledged
    acked = await add(stores, alert("alert:C0ALERTS:2"))
    await stores.sends.acknowledge(acked, "U0ANA")
    await add(stores, alert("alert:C0ALERTS:3"))  # a later repeat, not acknowledged itself
    ended = await add(stores, alert("alert:C0ALERTS:4", fingerprint="fp-ended"))
    await stores.sends.acknowledge(ended, "U0ANA")
    await stores.sends.mark_resolved(ended)

    async def found(rule: str = "prod critical", fingerprint: str = "fp-db-1", since: datetime = since) -> str | None:
        record = await stores.sends.acked_repeat(rule, fingerprint, since)
        return record.id if record is not None else None

    assert await found() == acked.id
    assert await found(since=old.created_at) == acked.id  # the latest
    assert await found(since=acked.created_at + timedelta(seconds=1)) is None
    assert await found(fingerprint="fp-ended") is None  # resolved
    assert await found(fingerprint="fp-other") is None
    assert await found("staging") is None
    # The latest acknowledged alert with the fingerprint decides, even when it is of another rule.
    newer = await add(stores, alert("alert:C0ALERTS:5", rule="staging"))
    await stores.sends.acknowledge(newer, "U0BEN")
    assert await found() is None
    assert await found("staging") == newer.id


async def test_latest_alert_is_scoped_by_rules_channel_identity_and_time_and_skips_repeats(stores: Stores) -> None:
    def shared(n: int, rule: str, **kwargs: Any) -> SendRequest:
        return alert(f"alert:C0SHARED:{n}", channel="C0SHARED", rule=rule, **kwargs)

    old = await add(stores, shared(0, "grafana only"))
    since = stores.clock() + timedelta(seconds=1)
    grafana = await add(stores, shared(1, "grafana only"))
    other = await add(stores, shared(2, "any bot"))
    await add(stores, alert("alert:C0ELSEWHERE:3", channel="C0ELSEWHERE", rule="any bot"))
    await add(stores, shared(4, "any bot", identity="about-db-2"))
    await add(stores, shared(5, "any bot", kind=Surface.RESOLVED))  # the post that resolves, not an alert
    await add(stores, shared(6, "any bot"))
    claimed = {r.request.idempotency_key: r for r in await stores.sends.claim("w1", 10, LEASE)}
    await stores.sends.deduplicate(claimed["alert:C0SHARED:6"], other.id)  # a repeat is never what a post ends

    async def latest(*rules: str, since: datetime = since) -> str | None:
        found = await stores.sends.latest_alert("C0SHARED", "about-db-1", since, rules)
        return found.id if found is not None else None

    assert await latest("grafana only") == grafana.id  # not the later alert of another rule
    assert await latest("grafana only", "any bot") == other.id
    assert await latest("quiet") is None
    assert await latest("grafana only", since=grafana.created_at + timedelta(seconds=1)) is None
    assert await latest("grafana only", since=old.created_at) == grafana.id
