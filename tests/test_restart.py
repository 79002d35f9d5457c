"""kill -9 during a burst, then restart: no intent lost, none sent twice (except those recorded as unknown, which
are never resent), every outcome told in Slack. The bot runs as a real process on SQLite; JSON logs checked."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.fakes.d7 import TOKEN as D7_TOKEN
from tests.fakes.d7 import FakeD7
from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack
from tests.harness import POLICY, sign, slash_command
from tests.test_serve import free_port

ROOT = Path(__file__).resolve().parent.parent
BURST = 10


def start_bot(env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot"], env=env, cwd=cwd, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{env['PORT']}"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the bot did not come up"
        time.sleep(0.1)


def bot_env(slack: FakeSlack, d7: FakeD7, tmp_path: Path) -> dict[str, str]:
    """The bot's environment: the fakes, ``tmp_path/policy.yml`` and a SQLite file ``tmp_path/bot.db``."""
    return {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "D7_API_TOKEN": D7_TOKEN,
        "D7_API_URL": d7.url,
        "BOT_POLICY": str(tmp_path / "policy.yml"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
    }


def wait_until(condition, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def rows(db: Path) -> list[dict[str, object]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM sends ORDER BY created_at")]


def test_kill_9_mid_burst_then_restart(slack: FakeSlack, tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    (tmp_path / "policy.yml").write_text(POLICY)
    log = tmp_path / "bot.log"
    # About restarts, not Slack's pace: at about a post a second per channel, 40 posts to #ops would take 40 s.
    slack.relax_rates()
    with FakeD7(delay=5.0) as d7:
        env = bot_env(slack, d7, tmp_path) | {"LOG_FORMAT": "json"}
        base = f"http://127.0.0.1:{env['PORT']}"

        def fire(i: int, to: str | None = None) -> None:
            to = to or f"+1415555{i:04d}"
            body = slash_command("/sms", f"{to} burst {i}", response_url=slack.response_url("cmd"))
            headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(body)}
            assert httpx.post(f"{base}/slack/events", content=body, headers=headers, timeout=5).status_code == 200

        proc = start_bot(env, tmp_path, log)
        try:
            # First half: announced and handed to D7, which holds every answer for 5 s ('sending').
            for i in range(BURST):
                fire(i)
            wait_until(lambda: len(d7.requests) == BURST)
            # Second half: to people whose profile phones Slack is slow to give, so these are caught before sending
            # ('pending'). (A slow announcement no longer holds a text back.)
            slack.state.delays["users.info"] = 30
            for i in range(BURST, 2 * BURST):
                slack.add_user(f"U0P{i}", f"p{i}", f"+1415555{i:04d}")
                fire(i, f"<@U0P{i}|p{i}>")
            wait_until(lambda: len(slack.of("users.info")) == BURST)
            states = [r["state"] for r in rows(db)]
            assert states == ["sending"] * BURST + ["pending"] * BURST
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()

        slack.state.delays.clear()
        d7.delay = 0
        proc = start_bot(env, tmp_path, log)
        try:
            wait_until(lambda: all(r["posted_at"] for r in rows(db)))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)

    final = rows(db)
    assert len(final) == 2 * BURST  # no intent lost
    assert [r["state"] for r in final] == ["unknown"] * BURST + ["accepted"] * BURST
    sent = [b["messages"][0]["content"] for b in d7.bodies("/messages/v1/send")]
    for i in range(2 * BURST):
        assert sent.count(f"burst {i}") == 1, i  # the unknown ones are not resent; the pending ones go once
    assert {r["request_id"] for r in final[BURST:]} <= set(d7.sends)

    replies = [p for p in slack.of("chat.postMessage") if p.get("thread_ts")]
    assert sum("*Outcome unknown:*" in p["text"] for p in replies) == BURST
    assert sum("Accepted by D7" in p["text"] for p in replies) == BURST
    for r in final[:BURST]:  # unknown outcomes are told in the thread the first process announced
        assert any(p["thread_ts"] == r["thread_ts"] and "Outcome unknown" in p["text"] for p in replies)

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(line["message"].startswith("10 send(s) were in flight") for line in lines)
    accepted = [line for line in lines if line["message"].startswith("send accepted")]
    assert len(accepted) == BURST
    assert all(line["send_id"] and line["request_id"] for line in accepted)
    whole_log = log.read_text()
    assert "burst " not in whole_log  # message text is never logged
    assert "+1415555" not in whole_log  # nor phone numbers
    assert BOT_TOKEN not in whole_log
    assert D7_TOKEN not in whole_log


ALERT_POLICY = """
version: 1
senders:
  ops-sms: {via: sms, originator: OpsAlert}
contacts:
  oncall: ["+14155550100"]
alerts:
  - name: direct
    slack_channels: [C0A]
    match: FIRING
    sender: ops-sms
    to: ["group:oncall"]
  - name: from slack group
    slack_channels: [C0B]
    match: FIRING
    sender: ops-sms
    to: [S0ONCALL]
    max_per_phone: {count: 3, per: 1h}
"""


def alerts(db: Path) -> list[dict[str, object]]:
    return [r for r in rows(db) if r["surface"] == "alert"]


def test_kill_9_mid_alert_storm_then_restart(slack: FakeSlack, tmp_path: Path) -> None:
    from tests.harness import event_callback

    db = tmp_path / "bot.db"
    (tmp_path / "policy.yml").write_text(ALERT_POLICY)
    log = tmp_path / "bot.log"
    slack.add_channel("C0A")
    slack.add_channel("C0B")
    slack.add_user("U0ANA", "ana", "+1 415 555 0110")
    slack.state.usergroups["S0ONCALL"] = ["U0ANA"]
    with FakeD7(delay=5.0) as d7:
        env = bot_env(slack, d7, tmp_path)
        base = f"http://127.0.0.1:{env['PORT']}"

        def alert(channel: str, i: int) -> None:
            event = {"type": "message", "bot_id": "B0MON", "text": f"FIRING check{chr(97 + i)} down", "ts": f"1.{i}"}
            body = event_callback(event, channel=channel)
            headers = {"Content-Type": "application/json", **sign(body)}
            assert httpx.post(f"{base}/slack/events", content=body, headers=headers, timeout=5).status_code == 200

        proc = start_bot(env, tmp_path, log)
        try:
            for i in range(5):  # handed to D7, which holds its answers: 'sending' when the bot dies
                alert("C0A", i)
            wait_until(lambda: len(d7.requests) == 5)
            slack.state.delays["usergroups.users.list"] = 30  # these wait for the on-call group: 'pending'
            for i in range(5, 10):
                alert("C0B", i)
            wait_until(lambda: len(slack.of("usergroups.users.list")) >= 1)
            assert [r["state"] for r in alerts(db)] == ["sending"] * 5 + ["pending"] * 5
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()

        slack.state.delays.clear()
        d7.delay = 0
        proc = start_bot(env, tmp_path, log)
        try:
            for i in range(5, 10):  # Slack retries the deliveries it got no answer for: still one alert each
                alert("C0B", i)
            wait_until(lambda: len(alerts(db)) == 10 and all(r["posted_at"] for r in alerts(db)))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)

    final = alerts(db)
    assert sorted(r["state"] for r in final[:5]) == ["unknown"] * 5
    assert sorted(r["state"] for r in final[5:]) == ["accepted"] * 3 + ["bundled"] * 2
    assert [r["state"] for r in rows(db) if r["surface"] == "summary"] == ["pending"]  # due at the hour's end
    sent = [b["messages"][0]["content"] for b in d7.bodies("/messages/v1/send")]
    assert sorted(sent) == sorted(f"FIRING check{chr(97 + i)} down" for i in range(8))  # each once, unknown not resent
    replies = [p["text"] for p in slack.of("chat.postMessage") if p.get("thread_ts")]
    assert sum("Outcome unknown" in t for t in replies) == 5
    assert sum("Alert texted" in t for t in replies) == 3
    assert sum("Not texted now" in t for t in replies) == 2
    with sqlite3.connect(db) as conn:
        held = conn.execute("SELECT held, count(*) FROM alert_deliveries GROUP BY held ORDER BY held").fetchall()
    assert held == [(0, 3), (1, 2)]  # counted once per alert, across the restart
