"""Benchmark: replicas that add up — 1, 2 and 3 ``python -m bot`` processes on one PostgreSQL database.

    TEST_DATABASE_URL=postgresql://postgres@127.0.0.1/bench_replicas \\
        python -m bench.replicas [--counts 1,2,3] [--sends 1000] [--concurrency 50] [--d7-delay 0.2]
                                 [--settle 11] [--predict 10] [--chart docs/img/replicas.png] [--plain]

For each count: the tables are dropped, the replicas start on the one database against the loopback fakes (fake
Slack, fake D7 answering after --d7-delay), each gets a warm-up, then --sends signed ``/sms`` requests go to them
round robin (a load balancer's way), --concurrency in flight (closed loop). Sends/s is first request → last result
posted in its thread, as in ``bench.pipeline``.

Where the time goes, from PostgreSQL's own counters over the measured window: ``pg_stat_database`` (commits,
rollbacks, deadlocks, rows), ``pg_stat_user_tables`` for ``sends`` (rows inserted and updated per send),
``pg_stat_statements`` when the server has it loaded (``CREATE EXTENSION`` is tried; it needs
``shared_preload_libraries``, else skipped), and every --sample seconds ``pg_stat_activity`` joined with
``pg_locks``: each replica's backends as running, waiting for a lock, for I/O (commits' WAL flush), or idle inside a
transaction (PostgreSQL waiting for the replica). CPU from ``/proc``: each replica, the database's backends, the
machine. Unless --plain, each replica is ``python -m bot`` with SQLAlchemy listeners counting its statements, BEGINs,
commits and claims (``bench.replicas --replica``; a counter per statement, microseconds), because without
``pg_stat_statements`` the database does not count statements.

Those per-send costs feed ``ceiling()``, the model that predicts sends/s for N replicas, on this machine (all on
its cores) and with a core per replica (--predict, 10 by default). Statistics PostgreSQL has not flushed yet (an
idle backend holds them up to 10 s) would blur the window, so the counters are read after --settle seconds of quiet,
before and after the sends; the replicas' idle polling in the quiet after them (counted by the replicas, so not
with --plain) is taken off. Each replica opens up to 17 connections (a pool of 15, two for intents): mind
``max_connections`` when other databases on the server are busy. Loopback only; bounded by --sends and a 180 s
deadline per count; stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._bot import bot_env, bot_process, cpu_seconds, percentile, post_command, wait_for_results
from bench._fake import loopback_fakes

DEADLINE = 180.0
WARMUP = 20  # per replica: imports, phone metadata, the first statements compiled
OUTBOX_IN_FLIGHT = 200  # bot.sending.outbox.DEFAULT_CONCURRENCY: sends one replica's outbox has at D7 at once
COUNTS_FILE = "statements.json"
# The outbox's claim: ``UPDATE sends SET claimed_by=… WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING …``.
CLAIM = ("UPDATE sends SET ", " claimed_by=", "SKIP LOCKED")
MARK = "/* bench.replicas */ "  # the bench's own statements, told apart in pg_stat_statements


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class SendCost:
    """What one send costs, measured at one replica count (milliseconds, or counts, per send)."""

    replica_cpu_ms: float  # in the replica that handles it: one event loop, so one replica uses one core at most
    db_cpu_ms: float  # in PostgreSQL's backends
    harness_cpu_ms: float  # the fakes' and the load generator's (absent in production)
    commits: float
    round_trips: float | None  # statements + BEGIN + COMMIT/ROLLBACK, when counted
    lock_wait_ms: float  # backend time spent waiting for a heavyweight lock (a hot row would show here)


def ceiling(
    cost: SendCost,
    replicas: int,
    *,
    shared_cores: float | None = None,
    db_cores: float = 2.0,
    d7_delay: float = 0.2,
    in_flight: int = OUTBOX_IN_FLIGHT,
) -> dict[str, Any]:
    """Sends/s ``replicas`` replicas can reach, and each bound: the lowest one is the prediction.

    Each replica is one event loop, so it sends at most ``1000 / replica_cpu_ms`` a second. With ``shared_cores``
    (this machine) replicas, PostgreSQL and the harness share those cores, so every send costs all three CPU times;
    otherwise each replica has a core of its own and PostgreSQL ``db_cores``. Each replica keeps ``in_flight`` sends
    at D7, which answers after ``d7_delay``. Time spent waiting for locks is a serial section (Amdahl): it is not
    divided among replicas.
    """
    bounds = {
        "replicas_cpu": replicas * 1000 / cost.replica_cpu_ms,
        "d7_in_flight": replicas * in_flight / d7_delay,
    }
    if shared_cores is not None:
        per_send = cost.replica_cpu_ms + cost.db_cpu_ms + cost.harness_cpu_ms
        bounds["machine_cpu"] = shared_cores * 1000 / per_send
    else:
        bounds["database_cpu"] = db_cores * 1000 / cost.db_cpu_ms
    if cost.lock_wait_ms > 0:
        bounds["lock_waits"] = 1000 / cost.lock_wait_ms
    bounds = {name: round(value, 1) for name, value in bounds.items()}
    bound = min(bounds, key=bounds.__getitem__)
    return {"sends_per_s": bounds[bound], "bound_by": bound, **bounds}


# ---------------------------------------------------------------- one replica, its statements counted


def serve_counted() -> None:
    """``python -m bot`` with SQLAlchemy listeners that count its statements, BEGINs, commits, rollbacks, claims and
    rows claimed; SIGUSR1 writes the counts so far to ``statements.json`` in the working directory."""
    import runpy

    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    from bot.storage.engine import PING_IDLE

    counts: Counter[str] = Counter()

    def autocommit(conn: Any) -> bool:
        return bool(conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT")

    def executed(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        counts["statements"] += 1
        if autocommit(conn):
            counts["autocommitted"] += 1  # a read outside BEGIN: a transaction of its own in PostgreSQL's counts
        counts[statement.lstrip().split(None, 1)[0].upper()] += 1
        if statement.startswith(CLAIM[0]) and CLAIM[1] in statement and CLAIM[2] in statement:
            counts["claims"] += 1
            counts["rows_claimed"] += max(cursor.rowcount, 0)

    def dump(*_: object) -> None:
        Path(f"{COUNTS_FILE}.tmp").write_text(json.dumps(counts))
        Path(f"{COUNTS_FILE}.tmp").replace(COUNTS_FILE)

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        counts["checkouts"] += 1
        idle_since = record.info.get("idle_since")  # read before the bot's own listener takes it
        if idle_since is not None and time.monotonic() - idle_since >= PING_IDLE:
            counts["pings"] += 1

    def transaction(conn: Any, name: str) -> None:
        if not autocommit(conn):  # SQLAlchemy begins and ends its own transaction; PostgreSQL sees no BEGIN
            counts[name] += 1

    event.listen(Engine, "after_cursor_execute", executed)
    # The bot pings a connection idle in the pool over PING_IDLE: BEGIN, ";", ROLLBACK (three round trips).
    event.listen(Pool, "checkout", checkout, insert=True)
    for name in ("begin", "commit", "rollback"):
        event.listen(Engine, name, lambda conn, name=name: transaction(conn, name.upper()))
    signal.signal(signal.SIGUSR1, dump)
    sys.argv = [sys.argv[0]]
    runpy.run_module("bot", run_name="__main__", alter_sys=True)


def read_counts(pid: int, workdir: Path) -> Counter[str]:
    """Ask a counted replica for its counts so far (SIGUSR1) and read them."""
    path = workdir / COUNTS_FILE
    before = path.stat().st_mtime_ns if path.exists() else 0
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while not path.exists() or path.stat().st_mtime_ns == before:
        if time.monotonic() > deadline:
            raise RuntimeError(f"replica {pid} did not write its statement counts")
        time.sleep(0.02)
    return Counter(json.loads(path.read_text()))


# ---------------------------------------------------------------- what /proc says


def children_cpu(exclude: list[int]) -> float:
    """CPU seconds of this process's children but ``exclude``: the fakes (the replicas are counted apart)."""
    total = 0.0
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            if int(pid) not in exclude:
                try:
                    total += cpu_seconds(int(pid))
                except OSError:
                    continue
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8]) / os.sysconf("SC_CLK_TCK")
    idle = (fields[3] + fields[4]) / os.sysconf("SC_CLK_TCK")
    return total - idle, total


def postgres_ports(pid: int, server_port: int) -> set[int]:
    """The local ports of ``pid``'s connections to PostgreSQL (matched to ``pg_stat_activity.client_port``)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes and int(fields[2].rsplit(":", 1)[1], 16) == server_port:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


# ---------------------------------------------------------------- what PostgreSQL says


class Observer:
    """Reads PostgreSQL's counters for the bench's database, and samples its backends while a count runs."""

    def __init__(self, dsn: str, server_port: int) -> None:
        self.dsn, self.server_port = dsn, server_port
        self.own_transactions = 0  # the bench's own queries, each a transaction in pg_stat_database too
        self.statements_available: str | bool | None = None
        self.samples: dict[str, Counter[str]] = {}
        self.waits: Counter[str] = Counter()
        self.ungranted_max = 0
        self.sample_count = 0

    async def _fetch(self, conn: Any, query: str) -> list[Any]:
        self.own_transactions += 1
        return list(await conn.fetch(MARK + query))

    async def prepare(self) -> None:
        """Try ``pg_stat_statements``; reset it for this database when it works."""
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        try:
            await self._fetch(conn, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await self._fetch(conn, "SELECT 1 FROM pg_stat_statements LIMIT 1")
            dbid = "(SELECT oid FROM pg_database WHERE datname = current_database())"
            await self._fetch(conn, f"SELECT pg_stat_statements_reset(0, {dbid}, 0)")
            self.statements_available = True
        except asyncpg.PostgresError as exc:
            self.statements_available = f"skipped: {exc}"
        finally:
            await conn.close()  # a closed backend's statistics are flushed at once

    async def counters(self) -> dict[str, Any]:
        import asyncpg

        own = self.own_transactions  # the bench's transactions before this read (each flushed by then: closed)
        conn = await asyncpg.connect(self.dsn)
        try:
            database = (
                await self._fetch(
                    conn,
                    "SELECT xact_commit, xact_rollback, deadlocks, tup_returned, tup_fetched, tup_inserted,"
                    " tup_updated, tup_deleted FROM pg_stat_database WHERE datname = current_database()",
                )
            )[0]
            tables = await self._fetch(
                conn,
                "SELECT relname, seq_scan, coalesce(idx_scan, 0) AS idx_scan, n_tup_ins, n_tup_upd, n_tup_hot_upd,"
                " n_tup_del FROM pg_stat_user_tables",
            )
            statements = []
            if self.statements_available is True:
                statements = await self._fetch(
                    conn,
                    "SELECT query, calls, rows, total_exec_time FROM pg_stat_statements"
                    " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
                )
                statements = [s for s in statements if not s["query"].startswith(MARK.strip())]
        finally:
            await conn.close()
        return {
            "own": own,
            "database": dict(database),
            "tables": {r["relname"]: {k: v for k, v in dict(r).items() if k != "relname"} for r in tables},
            "statements": [dict(r) for r in statements],
        }

    async def sample(self, replicas: dict[int, int], every: float, stop: asyncio.Event) -> None:
        """Every ``every`` seconds, each backend of the database by replica (``replicas``: pid → index) and state."""
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        owner: dict[int, int] = {}
        try:
            while not stop.is_set():
                rows = await self._fetch(
                    conn,
                    "SELECT a.client_port, a.state, a.wait_event_type, a.wait_event,"
                    " (SELECT count(*) FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted) AS ungranted"
                    " FROM pg_stat_activity a WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()"
                    " AND a.backend_type = 'client backend'",
                )
                if any(r["client_port"] not in owner for r in rows):  # a new pool connection: find its replica
                    for pid, index in replicas.items():
                        owner.update(dict.fromkeys(postgres_ports(pid, self.server_port), index))
                self.sample_count += 1
                self.ungranted_max = max(self.ungranted_max, sum(r["ungranted"] for r in rows))
                for r in rows:
                    which = f"replica-{owner[r['client_port']]}" if r["client_port"] in owner else "other"
                    self.samples.setdefault(which, Counter())[_state(r)] += 1
                    if r["wait_event_type"]:
                        self.waits[f"{r['wait_event_type']}:{r['wait_event']}"] += 1
                await asyncio.sleep(every)
        finally:
            await conn.close()

    async def backend_pids(self) -> list[int]:
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await self._fetch(
                conn,
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'",
            )
        finally:
            await conn.close()
        return [r["pid"] for r in rows]


def _state(row: Any) -> str:
    """One sample of a backend: what it was doing, in the terms of where a send's time goes."""
    if row["state"] in ("idle in transaction", "idle in transaction (aborted)"):
        return "idle_in_transaction"  # a transaction open, PostgreSQL waiting for the replica's next statement
    if row["state"] != "active":
        return "idle"
    kind = row["wait_event_type"]
    return {None: "running", "Lock": "lock_wait", "LWLock": "lwlock_wait", "IO": "io_wait"}.get(kind, "other_wait")


def backend_cpu(pids: list[int]) -> dict[int, float]:
    cpu = {}
    for pid in pids:
        try:
            cpu[pid] = cpu_seconds(pid)
        except OSError:
            continue
    return cpu


# ---------------------------------------------------------------- one count


async def fire(bases: list[str], slack_url: str, sends: int, concurrency: int) -> dict[str, Any]:
    """Warm every replica up, then ``sends`` requests round robin, ``concurrency`` in flight; wait for the results."""
    from tests.harness import slash_command

    acks: list[float] = []
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def one(i: int) -> None:
            body = slash_command(
                "/sms", f"+1415555{i % 10000:04d} replicas {i}", response_url=f"{slack_url}/response/r/{i}"
            )
            async with gate:
                acks.append(await post_command(http, bases[i % len(bases)], body))

        first = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(sends)))
        all_acked = time.perf_counter() - first
        warmed = WARMUP * len(bases)
        await wait_for_results(http, slack_url, sends + warmed, first, DEADLINE)
        done = time.perf_counter() - first
    return {
        "sends_per_s": round(sends / done, 1),
        "acks_per_s": round(sends / all_acked, 1),
        "ack_p50_ms": round(percentile(acks, 50) * 1000, 1),
        "ack_p99_ms": round(percentile(acks, 99) * 1000, 1),
        "first_request_to_last_result_s": round(done, 2),
    }


async def warm_up(bases: list[str], slack_url: str) -> None:
    from tests.harness import slash_command

    async with aiohttp.ClientSession() as http:
        for base in bases:
            for i in range(WARMUP):
                await post_command(http, base, slash_command("/sms", f"+14155550199 warm-up {i}"))
        await wait_for_results(http, slack_url, WARMUP * len(bases), time.perf_counter(), DEADLINE)


def measure(count: int, args: argparse.Namespace, dsn: str) -> dict[str, Any]:
    """One replica count, from fresh tables and fakes (the fake Slack counts results) to every replica stopped."""
    from sqlalchemy.engine import make_url

    from tests.harness import reset_postgres

    asyncio.run(reset_postgres(dsn))
    observer = Observer(_asyncpg_dsn(dsn), make_url(dsn).port or 5432)
    asyncio.run(observer.prepare())
    given = os.environ.get("BENCH_BOT_CMD")  # --plain runs it (an experiment's wrapper), or python -m bot
    if not args.plain:
        os.environ["BENCH_BOT_CMD"] = "-m bench.replicas --replica"
    try:
        with ExitStack() as stack:
            work, slack_url, d7_url = stack.enter_context(loopback_fakes(args.d7_delay))
            env = bot_env(slack_url, d7_url, work / "policy.yml", dsn)
            dirs = [work / f"count-{count}-replica-{i}" for i in range(count)]
            started = []
            for folder in dirs:  # one at a time: they take turns to migrate anyway
                folder.mkdir()
                started.append(stack.enter_context(bot_process(env, folder)))
            bases, pids = [b for b, _ in started], [p for _, p in started]
            asyncio.run(warm_up(bases, slack_url))
            time.sleep(args.settle)  # idle backends flush their statistics within 10 s
            result = asyncio.run(_window(observer, bases, pids, dirs, slack_url, args))
    finally:
        if given is None:
            os.environ.pop("BENCH_BOT_CMD", None)
        else:
            os.environ["BENCH_BOT_CMD"] = given
    return _summarise(count, args, result, observer)


async def _window(
    observer: Observer, bases: list[str], pids: list[int], dirs: list[Path], slack_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    """The measured part: counters and CPU before; the requests, the sampler running; CPU when the last result is
    posted; then --settle seconds of quiet (statistics flushed) and the counters again."""
    before = await observer.counters()
    counts = _client_counts(pids, dirs, args)
    db_pids = await observer.backend_pids()
    cpu = {
        "replicas": [cpu_seconds(pid) for pid in pids],
        "db": backend_cpu(db_pids),
        "machine": machine_cpu(),
        "bench": time.process_time(),
        "fakes": children_cpu(pids),
    }
    stop = asyncio.Event()
    sampler = asyncio.create_task(observer.sample(dict(zip(pids, range(len(pids)), strict=True)), args.sample, stop))
    try:
        load = await fire(bases, slack_url, args.sends, args.concurrency)
    finally:
        stop.set()
        await sampler
    db_now = backend_cpu(await observer.backend_pids())
    busy, total = machine_cpu()
    used = {
        "replicas": [cpu_seconds(pid) - c for pid, c in zip(pids, cpu["replicas"], strict=True)],
        "db": sum(now - cpu["db"].get(pid, 0.0) for pid, now in db_now.items()),
        "machine_busy": busy - cpu["machine"][0],
        "machine_total": total - cpu["machine"][1],
        "bench": time.process_time() - cpu["bench"],
        "fakes": children_cpu(pids) - cpu["fakes"],
    }
    done = _client_counts(pids, dirs, args)
    await asyncio.sleep(args.settle)
    quiet = _client_counts(pids, dirs, args)
    after = await observer.counters()
    return {
        "load": load,
        "cpu": used,
        "before": before,
        "after": after,
        "client": [b - a for a, b in zip(counts, done, strict=True)],
        "client_quiet": [b - a for a, b in zip(done, quiet, strict=True)],
    }


def _client_counts(pids: list[int], dirs: list[Path], args: argparse.Namespace) -> list[Counter[str]]:
    return [] if args.plain else [read_counts(pid, folder) for pid, folder in zip(pids, dirs, strict=True)]


def _summarise(count: int, args: argparse.Namespace, result: dict[str, Any], observer: Observer) -> dict[str, Any]:
    sends, cpu, before, after = args.sends, result["cpu"], result["before"], result["after"]
    per_replica = sends / count
    database = {k: after["database"][k] - before["database"][k] for k in before["database"]}
    database["xact_commit"] -= after["own"] - before["own"]  # the bench's own reads
    table = {k: after["tables"]["sends"][k] - before["tables"]["sends"][k] for k in before["tables"]["sends"]}
    client = _client(count, args, result, database)
    harness_s = cpu["fakes"] + cpu["bench"]
    elsewhere = cpu["machine_busy"] - sum(cpu["replicas"]) - cpu["db"] - harness_s
    lock_samples = sum(c["lock_wait"] for c in observer.samples.values())
    cost = SendCost(
        replica_cpu_ms=round(1000 * sum(cpu["replicas"]) / sends, 3),
        db_cpu_ms=round(1000 * cpu["db"] / sends, 3),
        harness_cpu_ms=round(1000 * harness_s / sends, 3),
        commits=round(database["xact_commit"] / sends, 2),
        round_trips=client.get("round_trips_per_send"),
        lock_wait_ms=round(1000 * lock_samples * args.sample / sends, 3),
    )
    return {
        "replicas": count,
        **result["load"],
        "cost_per_send": asdict(cost),
        "cpu_s": {
            "replicas": [round(c, 2) for c in cpu["replicas"]],
            "replica_ms_per_send_it_handled": [round(1000 * c / per_replica, 2) for c in cpu["replicas"]],
            "database_backends": round(cpu["db"], 2),
            "fakes": round(cpu["fakes"], 2),
            "bench_process": round(cpu["bench"], 2),
            # PostgreSQL's own processes (WAL writer, …) and whatever else ran on the machine: noise to watch
            "elsewhere": round(elsewhere, 2),
            "elsewhere_fraction": round(elsewhere / cpu["machine_total"], 3),
            "machine_busy_fraction": round(cpu["machine_busy"] / cpu["machine_total"], 3),
        },
        "database_per_send": {
            "commits": round(database["xact_commit"] / sends, 2),
            "rollbacks": round(database["xact_rollback"] / sends, 2),
            "rows_inserted": round(database["tup_inserted"] / sends, 2),
            "rows_updated": round(database["tup_updated"] / sends, 2),
            "sends_rows_inserted": round(table["n_tup_ins"] / sends, 2),
            "sends_rows_updated": round(table["n_tup_upd"] / sends, 2),
            "sends_hot_updates": round(table["n_tup_hot_upd"] / sends, 2),
            "sends_index_scans": round(table["idx_scan"] / sends, 2),
            "sends_seq_scans": round(table["seq_scan"] / sends, 2),
            "deadlocks": database["deadlocks"],
        },
        "client_counts": client,
        "pg_stat_statements": (
            _top_statements(before["statements"], after["statements"], sends)
            if observer.statements_available is True
            else observer.statements_available
        ),
        # Each replica's backends, sampled: milliseconds of backend time per send that replica handled.
        "backend_ms_per_send_by_replica": {
            which: {state: round(1000 * n * args.sample / per_replica, 2) for state, n in sorted(states.items())}
            for which, states in sorted(observer.samples.items())
        },
        "lock_waits": {"samples": lock_samples, "ungranted_max": observer.ungranted_max},
        "top_waits": dict(observer.waits.most_common(6)),
        "samples": observer.sample_count,
    }


def _client(count: int, args: argparse.Namespace, result: dict[str, Any], database: dict[str, int]) -> dict[str, Any]:
    """What the replicas counted; takes the quiet tail's transactions (idle polling) off ``database``'s counts."""
    if not result["client"]:
        return {}
    window: Counter[str] = sum(result["client"], Counter())
    quiet: Counter[str] = sum(result["client_quiet"], Counter())
    # PostgreSQL counts a transaction for every BEGIN and every ping: the two counts check each other.
    seen = sum(c["BEGIN"] + c["pings"] + c["autocommitted"] for c in (window, quiet))
    pg = database["xact_commit"] + database["xact_rollback"]
    database["xact_commit"] -= quiet["COMMIT"] + quiet["autocommitted"]
    database["xact_rollback"] -= quiet["BEGIN"] - quiet["COMMIT"] + quiet["pings"]
    trips = window["statements"] + window["BEGIN"] + window["COMMIT"] + window["ROLLBACK"] + 3 * window["pings"]
    return {
        "per_send": {k: round(v / args.sends, 2) for k, v in sorted(window.items()) if k != "rows_claimed"},
        "round_trips_per_send": round(trips / args.sends, 2),
        "rows_per_claim": round(window["rows_claimed"] / max(window["claims"], 1), 2),
        "claims_by_replica": [c["claims"] for c in result["client"]],
        "transactions_replicas_vs_pg": [seen, pg],
        "idle_transactions_per_replica_per_s": round((quiet["BEGIN"] + quiet["checkouts"]) / args.settle / count, 2),
    }


def _top_statements(before: list[dict[str, Any]], after: list[dict[str, Any]], sends: int) -> dict[str, Any]:
    earlier = {s["query"]: s for s in before}
    rows = []
    for s in after:
        b = earlier.get(s["query"], {"calls": 0, "rows": 0, "total_exec_time": 0.0})
        if (calls := s["calls"] - b["calls"]) > 0:
            rows.append((calls, s["rows"] - b["rows"], s["total_exec_time"] - b["total_exec_time"], s["query"]))
    rows.sort(reverse=True)
    return {
        "statements_per_send": round(sum(r[0] for r in rows) / sends, 2),
        "top": [
            {"calls_per_send": round(c / sends, 2), "rows_per_call": round(n / c, 2), "ms": round(t, 1), "query": q}
            for c, n, t, q in rows[:10]
        ],
    }


def _free_cores(run: dict[str, Any], cores: int) -> float:
    return round(cores * (1 - run["cpu_s"]["elsewhere_fraction"]), 2)


def _asyncpg_dsn(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def main() -> None:
    if sys.argv[1:] == ["--replica"]:
        serve_counted()
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="1,2,3", help="replica counts, comma-separated")
    parser.add_argument("--sends", type=int, default=1000, help="measured sends per count (after the warm-ups)")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight, over all replicas")
    parser.add_argument("--d7-delay", type=float, default=0.2)
    parser.add_argument("--settle", type=float, default=11.0, help="seconds of quiet before the counters are read")
    parser.add_argument("--sample", type=float, default=0.1, help="seconds between samples of the backends")
    parser.add_argument("--predict", type=int, default=10, help="replicas to predict, a core each")
    parser.add_argument("--db-cores", type=float, default=2.0, help="PostgreSQL's cores in the prediction")
    parser.add_argument("--plain", action="store_true", help="plain `python -m bot`: no statement counters")
    parser.add_argument("--chart", type=Path, help="write sends/s against replicas (measured, predicted) as a PNG")
    args = parser.parse_args()
    dsn = os.environ.get("TEST_DATABASE_URL") or sys.exit("set TEST_DATABASE_URL (a PostgreSQL database of its own)")
    if not dsn.startswith("postgres"):
        sys.exit("bench.replicas needs PostgreSQL: replicas share one database")
    counts = [int(c) for c in args.counts.split(",")]
    cores = os.cpu_count() or 1
    runs = [measure(count, args, dsn) for count in counts]
    cost = SendCost(**runs[-1]["cost_per_send"])  # the most replicas: contention included
    # Each count on the cores it had: what else ran on the machine meanwhile (PostgreSQL's own processes, other
    # work) is not the bench's.
    here = {
        str(r["replicas"]): ceiling(cost, r["replicas"], shared_cores=_free_cores(r, cores), d7_delay=args.d7_delay)
        for r in runs
    }
    apart = {
        str(n): ceiling(cost, n, db_cores=args.db_cores, d7_delay=args.d7_delay) for n in range(1, args.predict + 1)
    }
    one = runs[0]["sends_per_s"] if counts[0] == 1 else None
    summary = {
        "d7_delay_s": args.d7_delay,
        "sends": args.sends,
        "concurrency": args.concurrency,
        "cores": cores,
        "runs": runs,
        "scaling_vs_one": {str(r["replicas"]): round(r["sends_per_s"] / one, 2) for r in runs} if one else None,
        "model": {
            "cost_from_replicas": runs[-1]["replicas"],
            "cost_per_send": asdict(cost),
            "free_cores_here": {str(r["replicas"]): _free_cores(r, cores) for r in runs},
            "predicted_here": here,
            f"predicted_{args.predict}_replicas_a_core_each_db_{args.db_cores:g}_cores": apart[str(args.predict)],
        },
    }
    print(json.dumps(summary, indent=2))
    if args.chart:
        from bench._charts import replicas_chart

        replicas_chart(
            args.chart,
            measured={r["replicas"]: r["sends_per_s"] for r in runs},
            predicted_here={int(n): c["sends_per_s"] for n, c in here.items()},
            predicted_apart={int(n): c["sends_per_s"] for n, c in apart.items()},
            title=f"{args.sends} sends per count, D7 at {args.d7_delay * 1000:.0f} ms, {cores} cores",
            limits={f"model: database CPU ({args.db_cores:g} cores)": apart["1"]["database_cpu"]},
        )


if __name__ == "__main__":
    main()
