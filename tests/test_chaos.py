"""The chaos soak, short (``bench/chaos.py``): 75 s of mixed load with random faults (D7, Slack, the database,
replicas killed and stopped), then its invariant checker over the fakes' logs and the database. SQLite with one
replica always; PostgreSQL with two replicas beside it when ``TEST_DATABASE_URL`` is set. Both soaks run at once
(each is light: 3 requests/s), within about 2.5 minutes. A failure names the run's folder: replay it with the same
seed (``python -m bench.chaos --seed 1 …``), or check its files again (``python -m bench._chaos_check DIR``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench._chaos_check import check

ROOT = Path(__file__).resolve().parent.parent
SEED = 1
# 75 s of load, faults in the first 50 s (the last 25 s calm, so the quiet period after it stays short).
SOAK = ["--seed", str(SEED), "--minutes", "1.25", "--calm", "25", "--quiet-max", "60"]
WITHIN = 240  # seconds for one soak, start-up and check included (it takes about 130)


def soak(db: str, out: Path) -> subprocess.Popen[str]:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    if db == "postgresql":
        env["CHAOS_DATABASE_URL"] = os.environ["TEST_DATABASE_URL"]
    command = [sys.executable, "-m", "bench.chaos", *SOAK, "--db", db, "--out", str(out)]
    log = (out.parent / f"{db}.out").open("w")
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)  # noqa: S603


def test_a_short_chaos_soak_breaks_no_invariant(tmp_path: Path) -> None:
    dbs = ["sqlite", *(["postgresql"] if os.environ.get("TEST_DATABASE_URL") else [])]
    runs = {db: soak(db, tmp_path / db) for db in dbs}
    problems = []
    for db, proc in runs.items():
        try:
            proc.wait(timeout=WITHIN)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        summary_file = tmp_path / db / "summary.json"
        output = (tmp_path / f"{db}.out").read_text()
        if not summary_file.exists():
            problems.append(f"{db}: the soak did not finish (exit {proc.returncode}):\n{output[-3000:]}")
            continue
        summary = json.loads(summary_file.read_text())
        assert summary["requests"] > 150, summary  # the load ran
        assert summary["faults"] >= 6, summary  # and so did the faults
        if proc.returncode != 0:
            problems.append(f"{db} (files in {tmp_path / db}):\n{output.split('{', 1)[0]}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- the checker itself, on a tiny made-up story

SMS = "/messages/v1/send"


def story() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[SimpleNamespace]]:
    """One /sms to one phone: recorded, announced, sent, told in its thread, charged once."""
    row = {
        "id": "s1",
        "idempotency_key": "trigger:t1",
        "state": "accepted",
        "request_id": "r1",
        "via": "sms",
        "text": "chaos1c1 disk full",
        "sent_text": "chaos1c1 disk full",
        "recipients": ["+14155552001"],
        "held": None,
        "surface": "command",
        "posted_at": "2026-12-07 10:00:01",
        "result_ts": "2.0",
        "thread_ts": "1.0",
        "origin_thread_ts": None,
        "channel_id": "C0OPS1",
        "user_id": "U0ANA",
        "step": None,
        "dry_run": False,
    }
    db = {
        "sends": [row],
        "budget_windows": [{"key": "user:U0ANA", "window_start": "w", "used": 1}],
        "budget_charges": [{"send_id": "s1", "key": "user:U0ANA", "window_start": "w", "messages": 1}],
    }

    def post(ts: str, text: str, thread: str | None = None, late: float = 0.0) -> dict[str, Any]:
        params = {"channel": "C0OPS1", "text": text} | ({"thread_ts": thread} if thread else {})
        return {
            "method": "chat.postMessage",
            "params": params,
            "ok": True,
            "ts": ts,
            "abandoned": False,
            "arrived_at": 100.0,
            "answered_at": 100.0 + late,
            "blocks": "b",
            "post": None,
        }

    slack = {
        "calls": [
            post("1.0", "An SMS from <@U0ANA> to 1 recipient(s): chaos1c1 disk full"),
            post("2.0", ":white_check_mark: *Accepted by D7* · request_id `r1`", thread="1.0"),
        ],
        "responses": [],
    }
    body = {"messages": [{"recipients": ["+14155552001"], "content": "chaos1c1 disk full"}]}
    d7 = {"requests": [{"path": SMS, "body": json.dumps(body), "status": 200, "request_id": "r1"}]}
    sent = [SimpleNamespace(kind="command", token="chaos1c1", key="t1", outcome="ok")]
    return db, slack, d7, sent


def violations(db: dict[str, Any], slack: dict[str, Any], d7: dict[str, Any], sent: list[Any]) -> dict[str, int]:
    found = check(db, slack, d7, sent, [], middle=0.0, load_ended=0.0)
    return {r.name: r.violations for r in found if r.violations}


def test_the_checker_finds_nothing_wrong_in_a_clean_story() -> None:
    assert violations(*story()) == {}


def test_the_checker_counts_a_text_d7_carried_out_twice() -> None:
    db, slack, d7, sent = story()
    d7["requests"].append(d7["requests"][0] | {"request_id": "r2"})
    assert violations(db, slack, d7, sent) == {"one_outcome": 1, "no_text_twice": 1}


def test_the_checker_counts_a_doubled_post_also_when_slack_answered_the_first_late() -> None:
    db, slack, d7, sent = story()
    slack["calls"].append(slack["calls"][0] | {"ts": "3.0"})
    assert violations(db, slack, d7, sent) == {"no_post_twice": 1}
    slack["calls"][0]["answered_at"] += 12.0  # the first copy's answer came after the bot's 10-s timeout
    assert violations(db, slack, d7, sent) == {"no_post_twice": 1}  # the bot looks before posting again
    found = check(db, slack, d7, sent, [], middle=0.0, load_ended=0.0)
    (doubled,) = [r for r in found if r.name == "no_post_twice"]
    assert "after a lost answer" in doubled.examples[0]


def test_the_checker_counts_a_keyed_note_posted_twice_even_in_an_alerts_thread() -> None:
    db, slack, d7, sent = story()
    note = slack["calls"][1] | {"post": "s1:undelivered:ab12", "ts": "4.0"}
    note["params"] = note["params"] | {"channel": "C0ALERTS1", "text": ":rotating_light: not delivered"}
    slack["calls"] += [note, note | {"ts": "5.0"}]
    assert violations(db, slack, d7, sent) == {"no_other_post_twice": 1}


def test_the_checker_counts_an_outcome_not_told_in_its_thread() -> None:
    db, slack, d7, sent = story()
    slack["calls"][1]["params"]["thread_ts"] = "9.0"
    assert violations(db, slack, d7, sent) == {"told_in_thread": 1}


def test_the_checker_counts_rows_left_sending_budgets_off_and_texts_told_not_recorded() -> None:
    db, slack, d7, sent = story()
    db["sends"][0]["state"] = "sending"
    db["budget_windows"][0]["used"] = 2
    sent[0].outcome = "not_recorded"
    assert violations(db, slack, d7, sent) == {"no_row_sending": 1, "budgets_exact": 1, "not_recorded_never_sent": 1}
