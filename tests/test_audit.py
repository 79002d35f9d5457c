"""``python -m bot audit``: who sent what to whom, where, and the outcome; numbers masked unless asked."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.d7 import FakeD7, Reply
from tests.fakes.slack import FakeSlack
from tests.harness import running_app

ROOT = Path(__file__).resolve().parent.parent


def audit(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "DATABASE_URL": f"sqlite:///{db}"}
    return subprocess.run(  # noqa: S603 - our own module
        [sys.executable, "-m", "bot", "audit", *args],
        env=env,
        cwd=db.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
async def db(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> Path:
    fake_d7.enqueue(Reply(200), Reply(402))
    async with running_app(slack, fake_d7, tmp_path) as app:
        for text in ("+14155550100 first", "+14155550101 second", "+442079460000 third"):
            await app.command("/sms", text)
            await app.settle()
    return tmp_path / "bot.db"


def test_json_export_has_who_what_whom_where_and_outcome(db: Path, fake_d7: FakeD7) -> None:
    result = audit(db, "--format", "json")

    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    (request_id,) = fake_d7.sends
    assert [(r["state"], r["user"], r["channel"], r["text"], r["recipients"]) for r in rows] == [
        ("accepted", "U0ALICE", "C0OPS", "first", "+1 415 ••• 0100"),
        ("failed", "U0ALICE", "C0OPS", "second", "+1 415 ••• 0101"),
        ("denied", "U0ALICE", "C0OPS", "third", "•••0000"),
    ]
    assert rows[0]["request_id"] == request_id
    assert rows[0]["sender"] == "ops-sms"
    assert rows[1]["detail"].startswith("HTTP 402: ")
    assert rows[2]["detail"] == "+44 20 ••• 0000 is outside the numbers rule 'ops may page on-call' allows"


def test_full_numbers_and_csv(db: Path) -> None:
    result = audit(db, "--format", "csv", "--full-numbers")

    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["recipients"] for r in rows] == ["+14155550100", "+14155550101", "+442079460000"]


def test_table_is_the_default(db: Path) -> None:
    result = audit(db)

    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "created_at",
        "state",
        "via",
        "user",
        "channel",
        "sender",
        "recipients",
        "request_id",
        "detail",
    ]
    assert lines[-1] == "3 send(s)"
    assert "+14155550100" not in result.stdout


def test_prune_and_bad_arguments(db: Path) -> None:
    assert audit(db, "prune", "--older-than", "90d").stdout == "deleted 0 finished send(s) older than 90d\n"
    missing = audit(db, "prune")
    assert (missing.returncode, missing.stderr) == (2, "error: audit prune needs --older-than (for example 90d)\n")
    bad = audit(db, "--since", "yesterday")
    assert bad.returncode == 2
    assert bad.stderr == "error: --since: 'yesterday' is not a duration like 30s, 10m, 1h or 2d\n"
    assert len(audit(db, "--format", "json").stdout.splitlines()) == 3
