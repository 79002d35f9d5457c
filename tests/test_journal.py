"""D7's answers are never lost while the database does not take them: the local journal (``bot/storage/journal.py``)
writes each one as it comes, before the database is asked (a process killed from then on loses none), fsyncs it once
its first write failed or took 0.2 s, and the next start writes them before recovery would mark their sends
unknown.

End to end: the bot runs as a real process; the database stops taking writes (SQLite locked by another process;
PostgreSQL behind a proxy that drops its packets) while D7 answers; the process is killed with SIGKILL before the
database is back; the database comes back; the restarted bot records D7's real answers, tells them in their
threads, and never sends a text again.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.domain.errors import D7InsufficientCreditError, D7OutcomeUnknownError
from bot.domain.models import SendResult, SendStatus
from bot.domain.sends import LeaseLost, Outcome, SendRecord, SendState
from bot.sending import keeping
from bot.sending.keeping import Journaled, keep, replay
from bot.sending.outbox import CLAIM_LEASE
from bot.sending.pipeline import SEND_LEASE
from bot.storage.journal import FileJournal, JournalInUse
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.faults import TcpProxy, lock_sqlite
from tests.harness import POLICY, reset_postgres
from tests.memory import ANNOUNCED
from tests.test_pipeline import World, command
from tests.test_pipeline import world as pipeline_world  # noqa: F401 - a fixture, by this name
from tests.test_replicas_and_shutdown import command as slash
from tests.test_replicas_and_shutdown import pg_rows, replies_by_thread, stop
from tests.test_restart import bot_env, rows, start_bot, wait_until

PG_URL = os.environ.get("TEST_DATABASE_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="TEST_DATABASE_URL is not set")
SMS = "/messages/v1/send"
ACCEPTED = Outcome(result=SendResult("req-7", SendStatus.ACCEPTED, None))


def sending(send_id: str = "send-1", worker: str = "worker-1") -> SendRecord:
    """A send at D7, as its worker holds it."""
    at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    return SendRecord(send_id, command(), SendState.SENDING, at, at + timedelta(minutes=10), claimed_by=worker)


def lines(path: Path) -> int:
    """Answers on disk (whole lines)."""
    return path.read_bytes().count(b"\n") if path.exists() else 0


# ------------------------------------------------------------ the file


async def test_an_answer_kept_is_read_back_by_the_next_process_and_emptied_once_written(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    credit = D7InsufficientCreditError("out of credit", http_status=402, code="INSUFFICIENT_CREDIT")
    journal = FileJournal.open(path)
    await journal.keep(sending("send-1"), ACCEPTED)
    await journal.keep(sending("send-2", "worker-2"), Outcome(error=credit))
    await journal.aclose()  # the process stops (its lines are on disk)

    again = FileJournal.open(path)
    kept = again.kept()
    assert [(k.send_id, k.worker) for k in kept] == [("send-1", "worker-1"), ("send-2", "worker-2")]
    assert kept[0].outcome.result == ACCEPTED.result
    error = kept[1].outcome.error
    assert isinstance(error, D7InsufficientCreditError)
    assert (str(error), error.http_status, error.code) == ("out of credit", 402, "INSUFFICIENT_CREDIT")
    assert "+1415" not in path.read_text()  # no text, no number: the send's id and D7's verdict
    again.written("send-1")
    assert path.stat().st_size > 0
    again.written("send-2")
    assert path.stat().st_size == 0  # every answer is in the database: nothing kept
    await again.aclose()


async def test_a_line_cut_off_by_a_crash_is_skipped_with_a_warning_and_the_next_line_is_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal"
    journal = FileJournal.open(path)
    await journal.keep(sending("send-1"), ACCEPTED)
    await journal.aclose()
    with path.open("ab") as file:
        file.write(b'{"v":1,"send_id":"send-2","wor')  # the process died mid-write

    journal = FileJournal.open(path)
    assert [k.send_id for k in journal.kept()] == ["send-1"]
    assert "cut off mid-write; skipped" in caplog.text
    await journal.keep(sending("send-3"), ACCEPTED)
    await journal.aclose()
    assert [k.send_id for k in FileJournal.open(path).kept()] == ["send-1", "send-3"]


async def test_an_unreadable_line_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "journal"
    journal = FileJournal.open(path)
    await journal.keep(sending("send-1"), ACCEPTED)
    await journal.aclose()
    with path.open("ab") as file:
        file.write(b"garbage\n")
    journal = FileJournal.open(path)
    await journal.keep(sending("send-2"), Outcome(error=D7OutcomeUnknownError("timed out")))
    await journal.aclose()

    kept = FileJournal.open(path).kept()
    assert [k.send_id for k in kept] == ["send-1", "send-2"]
    assert isinstance(kept[1].outcome.error, D7OutcomeUnknownError)
    assert "line 2 cannot be read" in caplog.text


async def test_two_processes_never_share_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    first = FileJournal.open(path)
    with pytest.raises(JournalInUse, match="each replica needs a journal of its own"):
        FileJournal.open(path)
    await first.aclose()
    FileJournal.open(path)  # free again once the first process is gone


async def test_answers_arriving_together_share_one_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fsyncs = []
    real = os.fsync

    def counted(fd: int) -> None:
        fsyncs.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counted)
    journal = FileJournal.open(tmp_path / "journal")
    fsyncs.clear()  # the directory's, when the file was created
    await asyncio.gather(*(journal.keep(sending(f"send-{i}"), ACCEPTED) for i in range(100)))
    await journal.aclose()

    assert len(FileJournal.open(tmp_path / "journal").kept()) == 100
    assert 1 <= len(fsyncs) <= 3, len(fsyncs)


# ------------------------------------------------------------ keeping an answer while the database does not take it


class Writes:
    """The database as ``keep`` sees it: each write fails, hangs or works, as the test says."""

    def __init__(self, *plan: str, hang: float = 1.0) -> None:
        self.plan = list(plan)
        self.hang = hang
        self.tries = 0

    async def __call__(self) -> SendRecord:
        self.tries += 1
        step = self.plan.pop(0) if self.plan else "ok"
        if step == "fail":
            raise OSError("database is locked")
        if step == "hang":
            await asyncio.sleep(self.hang)
        return sending()


@pytest.fixture
def journal(tmp_path: Path) -> FileJournal:
    return FileJournal.open(tmp_path / "journal")


async def test_an_answer_the_database_takes_at_once_costs_no_fsync_and_leaves_nothing(
    journal: FileJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs: list[int] = []
    monkeypatch.setattr(os, "fsync", fsyncs.append)
    await keep("D7's answer", sending(), Writes("ok"), Journaled(journal, sending(), ACCEPTED))
    assert journal.path.stat().st_size == 0
    assert fsyncs == []


async def test_an_answer_is_in_the_file_before_the_database_is_asked_so_a_kill_then_loses_none(
    journal: FileJournal, tmp_path: Path
) -> None:
    """No window: before, an answer reached the journal only once its write had failed or taken 0.2 s, and a process
    killed in between lost it. Now it is written at once (the page cache outlives the process; the fsync follows
    when the database is slow)."""
    record = sending()
    task = asyncio.create_task(
        keep("D7's answer", record, Writes("hang", hang=30), Journaled(journal, record, ACCEPTED))
    )
    await asyncio.sleep(0.01)  # the database asked, not answering; well before HOLD_AFTER
    left = tmp_path / "left-by-a-kill"
    shutil.copyfile(journal.path, left)  # the file as a process killed now leaves it
    (kept,) = FileJournal.open(left).kept()
    assert (kept.send_id, kept.outcome.result) == (record.id, ACCEPTED.result)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_answer_whose_write_fails_is_kept_until_written(
    journal: FileJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keeping, "KEEP_RETRY", replace(keeping.KEEP_RETRY, base_delay=0.01, max_delay=0.01))
    writes = Writes("fail", "fail")
    record = sending()
    on_disk = []

    async def watched() -> SendRecord:
        on_disk.append(lines(journal.path))
        return await writes()

    await keep("D7's answer", record, watched, Journaled(journal, record, ACCEPTED))
    assert on_disk == [1, 1, 1]  # on disk before the first try, fsynced from its failure on
    assert journal.path.stat().st_size == 0  # and dropped once written


async def test_an_answer_whose_write_hangs_is_kept_after_a_moment(journal: FileJournal) -> None:
    record = sending()
    task = asyncio.create_task(keep("D7's answer", record, Writes("hang"), Journaled(journal, record, ACCEPTED)))
    await asyncio.sleep(keeping.HOLD_AFTER + 0.2)
    assert lines(journal.path) == 1  # kept while the first write still hangs
    await task
    assert journal.path.stat().st_size == 0


async def test_a_shutdown_before_the_answer_is_written_leaves_it_in_the_journal(
    journal: FileJournal, caplog: pytest.LogCaptureFixture
) -> None:
    record = sending()
    writes = Writes("hang", hang=30)
    task = asyncio.create_task(keep("D7's answer", record, writes, Journaled(journal, record, ACCEPTED)))
    await asyncio.sleep(0.05)  # before HOLD_AFTER: written, not fsynced yet
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await journal.aclose()

    (kept,) = FileJournal.open(journal.path).kept()
    assert (kept.send_id, kept.worker, kept.outcome.result) == (record.id, "worker-1", ACCEPTED.result)
    assert "kept in the journal, written at the next start" in caplog.text


async def test_an_answer_another_worker_settled_is_dropped(journal: FileJournal) -> None:
    record = sending()

    async def lost() -> SendRecord:
        raise LeaseLost(record.id)

    with pytest.raises(LeaseLost):
        await keep("D7's answer", record, lost, Journaled(journal, record, ACCEPTED))
    await journal.keep(record, ACCEPTED)  # (had it been held)
    journal.written(record.id)
    assert journal.path.stat().st_size == 0


# ------------------------------------------------------------ the next start (the pipeline on in-memory stores)


async def test_the_next_start_writes_each_kept_answer_and_tells_it_but_leaves_settled_sends_alone(
    pipeline_world: World,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    world = pipeline_world
    for key in ("a", "b", "c"):
        await world.submit(command(key=key))
    started = []
    for record in await world.sends.claim("worker-dead", 10, CLAIM_LEASE):  # the process that dies
        checked = (await world.pipeline.admission.admit(record.id, record.request, record.created_at)).checked
        started.append(await world.sends.start(record, checked, ANNOUNCED, SEND_LEASE))
    a, b, c = started
    assert a is not None
    assert b is not None
    assert c is not None
    await world.sends.finish(c, ACCEPTED)  # written after all, just before the process died
    path = tmp_path / "journal"
    journal = FileJournal.open(path)
    credit = D7InsufficientCreditError("out of credit", http_status=402)
    for record, outcome in ((a, ACCEPTED), (b, Outcome(error=credit)), (c, ACCEPTED)):
        await journal.keep(record, outcome)
    await journal.aclose()

    restarted = FileJournal.open(path)  # the next start
    pipeline = replace(world.pipeline, journal=restarted)
    assert await replay(restarted, world.sends, pipeline.settle) == 2
    assert await world.sends.recover(everything=True) == 0  # nothing left 'sending' to mark unknown

    stored = {r.id: r for r in await world.sends.audit()}
    assert (stored[a.id].state, stored[a.id].request_id) == (SendState.ACCEPTED, "req-7")
    assert stored[b.id].state is SendState.FAILED
    assert stored[a.id].claimed_by is None  # let go: told at once, not after the dead worker's lease
    assert lines(path) == 0
    assert sorted(await world.run()) == sorted([a.id, b.id, c.id])  # each outcome told, once
    assert world.conversations.methods.count("finish") == 3
    assert world.gateway.calls == []  # nothing sent again


# ------------------------------------------------------------ end to end: kill -9 while the database is down


BURST = 3


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=needs_pg)])
def test_kill_9_while_the_database_is_down_loses_no_d7_answer_and_sends_nothing_twice(
    slack: FakeSlack, tmp_path: Path, database: str
) -> None:
    (tmp_path / "policy.yml").write_text(POLICY)
    log = tmp_path / "bot.log"
    slack.relax_rates()
    with FakeD7(delay=2.0) as d7, TcpProxy(*_pg_target()) as proxy:
        env = bot_env(slack, d7, tmp_path) | {"LOG_FORMAT": "json"}
        if database == "postgresql":
            assert PG_URL is not None
            asyncio.run(reset_postgres(PG_URL))
            url = sa.engine.make_url(PG_URL).set(host="127.0.0.1", port=proxy.port)
            env["DATABASE_URL"] = url.render_as_string(hide_password=False)
            journal = tmp_path / f"d7-journal-{env['PORT']}"
        else:
            journal = tmp_path / "bot.db.d7-journal"

        def read_rows() -> list[dict[str, object]]:
            return pg_rows(str(PG_URL)) if database == "postgresql" else rows(tmp_path / "bot.db")

        proc = start_bot(env, tmp_path, log)
        try:
            for i in range(BURST):
                slash(env, slack, f"+1415555{i:04d} kept {i}")
            wait_until(lambda: len(d7.requests) == BURST, 10)  # at D7, which answers 2 s later
            assert [r["state"] for r in read_rows()] == ["sending"] * BURST
            with database_down(database, tmp_path / "bot.db", proxy):
                wait_until(lambda: lines(journal) == BURST, 10)  # D7 answered: kept on disk
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
            assert [r["state"] for r in read_rows()] == ["sending"] * BURST  # the database never had them
        finally:
            stop(proc)

        proc = start_bot(env, tmp_path, log)
        try:
            wait_until(lambda: all(r["posted_at"] for r in read_rows()), 30)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            stop(proc)

    final = read_rows()
    assert [r["state"] for r in final] == ["accepted"] * BURST  # D7's real answers, not "unknown"
    assert {r["request_id"] for r in final} == set(d7.sends)
    assert sorted(b["messages"][0]["content"] for b in d7.bodies(SMS)) == [f"kept {i}" for i in range(BURST)]
    threads = replies_by_thread(slack)
    for r in final:  # told in the thread the first process announced, once
        (reply,) = threads[str(r["thread_ts"])]
        assert "*Accepted by D7*" in reply
        assert str(r["request_id"]) in reply
    assert lines(journal) == 0
    assert f"{BURST} D7 answer(s) kept in the journal written to the database" in log.read_text()
    assert "in flight when the bot stopped" not in log.read_text()  # none marked unknown


def _pg_target() -> tuple[str, int]:
    url = sa.engine.make_url(PG_URL or "postgresql://127.0.0.1:5432/none")
    return url.host or "127.0.0.1", url.port or 5432


@contextmanager
def database_down(database: str, db: Path, proxy: TcpProxy) -> Iterator[None]:
    """SQLite locked by another process, or PostgreSQL's packets dropped, until the block ends."""
    if database == "postgresql":
        proxy.blackhole()
        try:
            yield
        finally:
            proxy.forward()
    else:
        with lock_sqlite(db, 60):
            yield
    time.sleep(0.1)
