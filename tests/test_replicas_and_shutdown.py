"""Replicas and shutdown as real processes: a replica killed with sends at D7 (its survivor settles and tells them,
none sent twice), and a SIGTERM while D7 has said ``Retry-After`` (the waiting sends go back to pending, not
unknown, and go once after the restart)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.fakes.d7 import FakeD7, Reply
from tests.fakes.slack import FakeSlack
from tests.harness import POLICY, reset_postgres, sign, slash_command
from tests.test_restart import bot_env, rows, start_bot, wait_until
from tests.test_serve import free_port

PG_URL = os.environ.get("TEST_DATABASE_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="TEST_DATABASE_URL is not set")

SMS = "/messages/v1/send"
# The bound: a dead replica's sends are settled and told within a minute of its death (a lease of 30 s,
# renewed every 10 s, plus the survivor's heartbeat of 10 s: 40 s at worst).
TAKEOVER_WITHIN = 60.0
RETRY_AFTER = 20  # seconds D7 asks for in the shutdown test; the drain is 25 s


def command(env: dict[str, str], slack: FakeSlack, text: str) -> None:
    """``/sms text`` in #ops, signed as Slack signs it, to the bot serving on ``env``'s port."""
    body = slash_command("/sms", text, response_url=slack.response_url("cmd"))
    headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(body)}
    url = f"http://127.0.0.1:{env['PORT']}/slack/events"
    assert httpx.post(url, content=body, headers=headers, timeout=5).status_code == 200


def pg_rows(url: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(url)
        try:
            return [dict(r) for r in await conn.fetch("SELECT * FROM sends ORDER BY created_at")]
        finally:
            await conn.close()

    return asyncio.run(read())


def stop(*procs: subprocess.Popen[bytes]) -> None:
    """Kill whatever is still running (a failed test must not leave bots behind)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def replies_by_thread(slack: FakeSlack) -> dict[str, list[str]]:
    threads: dict[str, list[str]] = {}
    for post in slack.of("chat.postMessage"):
        if post.get("thread_ts"):
            threads.setdefault(post["thread_ts"], []).append(post["text"])
    return threads


@needs_pg
def test_a_killed_replicas_sends_are_settled_and_told_once_by_the_survivor(slack: FakeSlack, tmp_path: Path) -> None:
    assert PG_URL is not None
    asyncio.run(reset_postgres(PG_URL))
    (tmp_path / "policy.yml").write_text(POLICY)
    held, burst = 3, 6
    for i in range(held):
        slack.add_user(f"U0H{i}", f"h{i}", f"+1415556{i:04d}")
    procs: list[subprocess.Popen[bytes]] = []
    with FakeD7(delay=5.0) as d7:
        env_a = bot_env(slack, d7, tmp_path) | {"DATABASE_URL": PG_URL}
        env_b = env_a | {"PORT": str(free_port())}
        try:
            procs.append(replica_a := start_bot(env_a, tmp_path, tmp_path / "a.log"))
            # While A runs alone, sends to people whose profile phones Slack is slow to give: A holds them before
            # D7 ('pending', leased to A). Killed within Slack's 10 s timeout, A never lets them go.
            slack.state.delays["users.info"] = 30
            for i in range(held):
                command(env_a, slack, f"<@U0H{i}|h{i}> held {i}")
            wait_until(lambda: len(slack.of("users.info")) == held, 10)
            (dead,) = {r["claimed_by"] for r in pg_rows(PG_URL)}
            procs.append(replica_b := start_bot(env_b, tmp_path, tmp_path / "b.log"))
            # Spread over both; D7 holds every answer for 5 s ('sending'). A's half first, at D7 before B's half is
            # asked: a replica woken by a command claims every due intent, the other's too.
            for i in range(burst // 2):
                command(env_a, slack, f"+1415555{i:04d} burst {i}")
            wait_until(lambda: len(d7.requests) == burst // 2, 10)
            for i in range(burst // 2, burst):
                command(env_b, slack, f"+1415555{i:04d} burst {i}")
            wait_until(lambda: len(d7.requests) == burst, 10)
            before = pg_rows(PG_URL)
            replica_a.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            replica_a.wait(timeout=10)
            slack.state.delays.clear()

            wait_until(lambda: all(r["posted_at"] for r in pg_rows(PG_URL)), TAKEOVER_WITHIN)
            settled_in = time.monotonic() - killed_at
            replica_b.send_signal(signal.SIGTERM)
            replica_b.wait(timeout=30)
        finally:
            stop(*procs)

    # Either replica may claim what the other was handed (one outbox, one table): which sends the dead one held is
    # read from the table at the moment of the kill.
    assert [(r["state"], r["claimed_by"]) for r in before[:held]] == [("pending", dead)] * held
    assert [r["state"] for r in before[held:]] == ["sending"] * burst
    in_flight = {r["id"] for r in before[held:] if r["claimed_by"] == dead}
    assert in_flight  # the dead replica had sends at D7
    assert {r["claimed_by"] for r in before[held:]} - {dead} != set()  # and so had the survivor

    final = pg_rows(PG_URL)
    assert settled_in < TAKEOVER_WITHIN
    assert {r["id"]: r["state"] for r in final} == {
        r["id"]: "unknown" if r["id"] in in_flight else "accepted" for r in before
    }  # in flight at D7: unknown, not resent; the dead one's pending ones and the survivor's own: accepted
    sent = sorted(b["messages"][0]["content"] for b in d7.bodies(SMS))
    assert sent == sorted([f"held {i}" for i in range(held)] + [f"burst {i}" for i in range(burst)])  # each once
    assert {r["request_id"] for r in final if r["state"] == "accepted"} <= set(d7.sends)

    announcements = [p for p in slack.of("chat.postMessage") if not p.get("thread_ts")]
    assert len(announcements) == len(final)  # the pending ones were announced once, by the survivor
    threads = replies_by_thread(slack)
    assert sorted(threads) == sorted(r["thread_ts"] for r in final)  # one thread per send, every one told
    for r in final:
        (reply,) = threads[r["thread_ts"]]  # told once
        assert ("*Outcome unknown:*" if r["state"] == "unknown" else "*Accepted by D7*") in reply, r["text"]
    recovered = re.findall(
        r"(\d+) send\(s\) of a stopped replica marked outcome unknown", (tmp_path / "b.log").read_text()
    )
    assert sum(map(int, recovered)) == len(in_flight)  # by the survivor's heartbeat (in one beat or two)


def test_sigterm_while_d7_asks_to_retry_later_puts_the_sends_back_to_pending(slack: FakeSlack, tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    (tmp_path / "policy.yml").write_text(POLICY)
    log = tmp_path / "bot.log"
    texts = [f"wait {i}" for i in range(3)]
    with FakeD7() as d7:
        env = bot_env(slack, d7, tmp_path)
        for _ in texts:
            d7.enqueue(Reply(429, {"detail": "slow down"}, headers={"Retry-After": str(RETRY_AFTER)}, path=SMS))
        proc = start_bot(env, tmp_path, log)
        try:
            asked_at = datetime.now(UTC)
            for i, text in enumerate(texts):
                command(env, slack, f"+1415555{i:04d} {text}")
            # The "retrying" note is posted after the wait is noted and before the client sleeps on Retry-After.
            wait_until(lambda: sum("slow down" in t for ts in replies_by_thread(slack).values() for t in ts) == 3, 10)
            answered_at = datetime.now(UTC)
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            proc.wait(timeout=30)
            stopped_in = time.monotonic() - signalled
        finally:
            stop(proc)
        assert proc.returncode == 0, log.read_text()
        assert stopped_in < RETRY_AFTER / 2  # the waits were cancelled, not sat out
        after_stop = rows(db)
        assert len(d7.requests) == 3  # nothing more was tried before stopping

        proc = start_bot(env, tmp_path, log)
        try:
            wait_until(lambda: all(r["posted_at"] for r in rows(db)), RETRY_AFTER + 15)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        finally:
            stop(proc)

    assert [(r["state"], r["claimed_by"], r["attempts"]) for r in after_stop] == [("pending", None, 1)] * 3
    for r in after_stop:  # retried when D7's wait would have ended, not at once and not later
        due = datetime.fromisoformat(r["next_attempt_at"]).replace(tzinfo=UTC)
        assert asked_at + timedelta(seconds=RETRY_AFTER) < due < answered_at + timedelta(seconds=RETRY_AFTER)
    final = rows(db)
    assert [r["state"] for r in final] == ["accepted"] * 3
    assert sorted(b["messages"][0]["content"] for b in d7.bodies(SMS)) == sorted(texts * 2)  # 429, then accepted
    assert sorted(s.recipients[0] for s in d7.sends.values()) == [f"+1415555{i:04d}" for i in range(3)]  # once each
    assert {r["request_id"] for r in final} == set(d7.sends)
    threads = replies_by_thread(slack)
    assert sorted(threads) == sorted(r["thread_ts"] for r in final)
    for r in final:
        retrying, result = threads[r["thread_ts"]]
        assert retrying.startswith(":hourglass_flowing_sand: D7 asked us to slow down (HTTP 429)"), retrying
        assert result.startswith(":white_check_mark: *Accepted by D7*"), result
    whole_log = log.read_text()
    assert "waiting up to 25s for 3 send(s) in flight" in whole_log
    assert "will read 'unknown'" not in whole_log
    assert "in flight when the bot stopped" not in whole_log
