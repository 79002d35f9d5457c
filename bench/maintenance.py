"""Benchmark: how long ``audit prune`` holds SQLite's write lock, and whether the bot's requests are recorded meanwhile.

    python -m bench.maintenance [--sends 200000] [--probe-every 0.01] [--intent-every 0.1] [--export]

A SQLite file is filled (bulk inserts) with ``--sends`` finished sends older than a day, each with a delivery
status and a delivery report; then ``python -m bot audit prune --older-than 1d`` runs as its own process, as an
operator runs it. Meanwhile, from other connections:

- a probe asks for the write lock (``BEGIN IMMEDIATE``, tried every millisecond) every ``--probe-every`` seconds
  and notes how long it waited: the longest wait is the longest single hold of the lock by the prune;
- the bot's own intake records a request every ``--intent-every`` seconds with its 2-s deadline, as before an ack.

Reports the prune's duration, the lock waits (longest, p99, p50) and how many requests were recorded in time.
``--export`` runs ``python -m bot audit --since 30d --format json`` (a read of the whole log) instead of the prune.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._bot import ROOT, percentile
from bot.domain.models import Origin, RecipientRef, RefKind, SendRequest, Surface, Via
from bot.storage import Storage
from bot.storage.database import INTAKE_WAIT

# The probe: a connection of its own that never waits inside SQLite (busy timeout 0), so that its own polling
# (every millisecond) measures the wait; it stops when its standard input closes and prints the waits as JSON.
PROBE = """
import json, select, sqlite3, sys, time
path, every = sys.argv[1], float(sys.argv[2])
conn = sqlite3.connect(path, timeout=0, isolation_level=None)
waits = []
while not select.select([sys.stdin], [], [], every)[0]:
    started = time.perf_counter()
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.OperationalError:
            time.sleep(0.001)
    waits.append(time.perf_counter() - started)
    conn.execute("ROLLBACK")
print(json.dumps(waits))
"""


@contextmanager
def lock_probe(db: Path, every: float = 0.01) -> Iterator[list[float]]:
    """Another process asks for the write lock every ``every`` seconds; the list yielded holds how long each ask
    waited once the block is left (the longest: the longest hold of the lock by anyone else meanwhile)."""
    probe = subprocess.Popen(
        [sys.executable, "-c", PROBE, str(db), str(every)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    waits: list[float] = []
    try:
        yield waits
    finally:
        out, _ = probe.communicate(timeout=30)
        waits += json.loads(out)


def _stamp(at: datetime) -> str:
    """A time as SQLAlchemy keeps it in SQLite (naive UTC)."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def fill_old_sends(db: Path, count: int, age: timedelta = timedelta(days=2)) -> None:
    """``count`` finished and told sends created ``age`` ago, each with a delivery status and a report, in bulk
    (the schema must exist: ``Storage.open`` first)."""
    at = _stamp(datetime.now(UTC) - age)
    refs = json.dumps([{"kind": "number", "value": "+14155550100", "label": None}])
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO sends (id, idempotency_key, created_at, updated_at, surface, team_id, user_id, channel_id,"
            " via, refs, text, state, attempts, next_attempt_at, deadline_at, private, retry_notice_posted,"
            " posted_at, finished_at, request_id, recipients)"
            " VALUES (?, ?, ?, ?, 'command', 'T0', 'U0', 'C0', 'sms', ?, 'old text', 'accepted', 1, ?, ?, 0, 0,"
            " ?, ?, ?, '[\"+14155550100\"]')",
            ((f"s{i:08d}", f"old:{i}", at, at, refs, at, at, at, at, f"r{i:08d}") for i in range(count)),
        )
        conn.executemany(
            "INSERT INTO recipient_statuses (send_id, recipient, status, rank, notified, updated_at)"
            " VALUES (?, '+14155550100', 'delivered', 3, 1, ?)",
            ((f"s{i:08d}", at) for i in range(count)),
        )
        conn.executemany(
            "INSERT INTO delivery_reports (id, report_key, request_id, recipient, status, received_at, applied_at)"
            " VALUES (?, ?, ?, '+14155550100', 'delivered', ?, ?)",
            ((str(uuid.uuid4()), f"k{i:08d}", f"r{i:08d}", at, at) for i in range(count)),
        )


def request(i: int) -> SendRequest:
    origin = Origin(Surface.COMMAND, "T0", "U0ALICE", "C0OPS")
    recipients = (RecipientRef(RefKind.NUMBER, "+14155550100"),)
    return SendRequest(Via.SMS, origin, recipients, f"during maintenance {i}", f"bench:{uuid.uuid4()}")


async def record_meanwhile(url: str, tool: subprocess.Popen[bytes], every: float) -> dict[str, Any]:
    """Record a request every ``every`` seconds while the tool runs, as the bot does before an ack."""
    took: list[float] = []
    missed = 0
    async with await Storage.open(url) as storage:
        i = 0
        while tool.poll() is None:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(INTAKE_WAIT):
                    await storage.sends.record(request(i), timedelta(minutes=15))
                took.append(time.perf_counter() - started)
            except Exception:  # not recorded in time, whatever the reason: counted
                missed += 1
            i += 1
            await asyncio.sleep(every)
    return {
        "requests": len(took) + missed,
        "recorded_in_time": len(took),
        "not_recorded": missed,
        "record_max_ms": round(max(took, default=0) * 1000, 1),
    }


async def _schema(url: str) -> None:
    async with await Storage.open(url):
        pass


def run(sends: int, probe_every: float, intent_every: float, command: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as work:
        db = Path(work) / "bot.db"
        url = f"sqlite:///{db}"
        asyncio.run(_schema(url))
        started = time.perf_counter()
        fill_old_sends(db, sends)
        filled = time.perf_counter() - started
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "DATABASE_URL": url}
        out = Path(work) / "out.txt"
        began = time.perf_counter()
        with lock_probe(db, probe_every) as waits, out.open("w") as sink:
            tool = subprocess.Popen(
                [sys.executable, "-m", "bot", "audit", *command], env=env, cwd=work, stdout=sink, stderr=sink
            )
            intents = asyncio.run(record_meanwhile(url, tool, intent_every))
            tool.wait(timeout=600)
            took = time.perf_counter() - began
        output = out.read_text()
        with sqlite3.connect(db) as conn:
            left = conn.execute("SELECT count(*) FROM sends WHERE id LIKE 's%'").fetchone()[0]
    return {
        "sends": sends,
        "fill_s": round(filled, 1),
        "command_s": round(took, 2),
        "command": " ".join(["audit", *command]),
        "it_said": output.strip() if len(output) < 200 else f"{len(output.splitlines())} lines",
        "old_sends_left": left,
        "lock_samples": len(waits),
        "lock_wait_max_ms": round(max(waits, default=0) * 1000, 1),
        "lock_wait_p99_ms": round(percentile(waits, 99) * 1000, 1) if waits else 0,
        "lock_wait_p50_ms": round(percentile(waits, 50) * 1000, 1) if waits else 0,
        **intents,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sends", type=int, default=200_000)
    parser.add_argument("--probe-every", type=float, default=0.01)
    parser.add_argument("--intent-every", type=float, default=0.1)
    parser.add_argument("--export", action="store_true", help="export the whole log instead of pruning it")
    args = parser.parse_args()
    command = ["--since", "30d", "--format", "json"] if args.export else ["prune", "--older-than", "1d"]
    print(json.dumps(run(args.sends, args.probe_every, args.intent_every, command), indent=2))


if __name__ == "__main__":
    main()
