"""Benchmark: an alert storm — monitoring posts as Slack message events, through the whole pipeline, into Slack.

    python -m bench.alert_storm [--events 1000] [--seconds 10] [--channels 1] [--distinct N] [--no-limits]
                                [--arrivals even|poisson] [--slack-limit | --no-slack-limit] [--slack-tiers]
                                [--reports] [--deadline 180] [--database sqlite|postgresql] [--chart PNG]
                                [--series JSON]
    python -m bench.alert_storm --alerts 5000 --minutes 5 --channels 50 --arrivals poisson --no-limits \
        --distinct 2500 --reports --slack-tiers --chart docs/img/storm.png

Events are Grafana-style bot posts in --channels alert channels, signed as Slack signs them and sent on a schedule
fixed before the storm starts (open loop: the arrival rate does not depend on the bot), evenly spaced or as a
Poisson process (--arrivals, --seed). By default they are --distinct different alerts (a quarter of the events),
each posted events/distinct times in its own channel (chosen at random), under one rule with `dedupe_window: 10m`
and `max_per_phone: {count: 5, per: 1h}` for two on-call numbers: most are deduplicated or held for the summary.
--no-limits drops the per-phone limit and, unless --distinct says otherwise, makes every event a different alert,
so every one is texted (the D7 path under storm load).

Slack's per-channel limit (about a post a second, bursts of 10; 429 with Retry-After over it) is on in the fake
Slack, and the bot paces itself to it (SLACK_CHANNEL_PACE=1), whenever the storm's alerts per channel per second
are within it: then the storm meets what it would meet in Slack. A storm above it in one channel (the default
scenario: 100 alerts/s in #alerts) would measure Slack's pace, not the bot, so there both are off
(SLACK_CHANNEL_PACE=0); --slack-limit / --no-slack-limit decide instead. --slack-tiers adds Slack's per-method
tiers (chat.update: 50 a minute for the workspace). --reports gives the bot a PUBLIC_URL and makes the fake D7
report every text "sent" (1 s) then "delivered" (4 s), so result cards are rewritten while the storm goes on.

Every second it samples: alerts arrived (sent to the bot), acked, decided (a final state in the send log:
texted, deduplicated, bundled or refused), told (threads with the bot's reply, as the fake Slack counts them),
backlog (arrived − told), the bot's CPU and the posts Slack answered 429. Reports ack p50/p99/max overall and the
worst 10-s window's p99, the time from the last alert until every one is decided and until every one is told
(backlog 0), texts D7 received (counted by the fake D7) against texts in the send log, Slack's answers by method,
and "unaccounted": events without a final state and a thread reply (must be 0). --chart draws backlog and acks over
time (``bench._charts``, the ``bench`` extra); --series writes the samples as JSON. The bot runs as its own
process; the fake Slack and fake D7 (answering after --d7-delay) as two more; all on 127.0.0.1. Bounded: it stops
--deadline seconds after the last alert whether or not all were told (exit status 1 then, as with any alert
unaccounted for or not acked).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._bot import bot_env, bot_process, cpu_seconds, database_url, peak_rss_mb, percentile
from bench._fake import _process
from bench._storm_fakes import channel_ids
from tests.harness import event_callback, sign

DEADLINE = 180.0  # seconds after the last alert that the bench waits for every one to be told
SLACK_POSTS_PER_SECOND = 1.0  # in one channel (the fake's limit and the bot's default pace)
SAMPLE_EVERY = 1.0
WINDOW = 10.0  # seconds of arrivals per ack-percentile window
FINAL = ("accepted", "deduplicated", "bundled", "denied", "rejected", "failed", "unknown")
PHONES = ("+14155550100", "+14155550101")
REPORT_SECRET = "storm-report-secret-0123456789"  # noqa: S105 - a loopback benchmark's own


@dataclass(frozen=True)
class Storm:
    """What arrives: ``events`` alerts over ``seconds`` in ``channels`` channels, ``distinct`` of them different."""

    events: int
    seconds: float
    channels: int
    distinct: int
    limits: bool  # the per-phone limit (5 an hour)
    arrivals: str  # even | poisson
    seed: int

    def schedule(self) -> list[float]:
        """When each alert arrives, in seconds from the first (fixed before the storm: open loop)."""
        if self.arrivals == "even" or self.events == 1:
            return [i * self.seconds / self.events for i in range(self.events)]
        # A Poisson process with exactly ``events`` arrivals in the storm: their times are uniform, sorted.
        rng = random.Random(self.seed)
        return [0.0, *sorted(rng.uniform(0, self.seconds) for _ in range(self.events - 1))]

    def channel_of(self) -> list[str]:
        """Each different alert's channel (its repeats come in the same one): at random, seeded."""
        names = channel_ids(self.channels)
        rng = random.Random(self.seed + 1)
        return [names[0] if len(names) == 1 else rng.choice(names) for _ in range(self.distinct)]

    @property
    def per_channel_rate(self) -> float:
        return self.events / self.seconds / self.channels

    def policy(self) -> str:
        channels = ", ".join(channel_ids(self.channels))
        limits = "\n    max_per_phone: {count: 5, per: 1h}" if self.limits else ""
        return f"""
version: 1
senders:
  ops-sms: {{via: sms, originator: OpsAlert}}
contacts:
  oncall: [{", ".join(f'"{p}"' for p in PHONES)}]
alerts:
  - name: storm
    slack_channels: [{channels}]
    match: "(?i)firing"
    from: bots
    sender: ops-sms
    to: ["group:oncall"]
    template: "{{title}}: {{text}}"
    dedupe_window: 10m{limits}
"""


def alert(i: int, distinct: int) -> dict[str, Any]:
    which = i % distinct
    name = "".join(chr(ord("a") + (which // 26**k) % 26) for k in range(3))  # a different word per alert
    return {
        "type": "message",
        "subtype": "bot_message",
        "bot_id": "B0GRAFANA",
        "username": "Grafana",
        "text": "",
        "ts": f"1763900000.{i:06d}",
        "attachments": [
            {
                "fallback": f"[FIRING:{i % 7 + 1}] Check {name} failed",
                "title": f"[FIRING:{i % 7 + 1}] Check {name} failed",
                "text": f"Probe {name} failed {i % 50 + 3} times in a row on <https://grafana.example.com/d/{name}|svc-{name}>",
                "fields": [{"title": "severity", "value": "critical", "short": True}],
            }
        ],
    }


@dataclass
class Run:
    """What the load generator saw as the storm went: each alert's arrival and ack, and the samples."""

    started: float = 0.0  # perf_counter of the first alert
    arrived: int = 0
    acked: int = 0
    ack_errors: int = 0
    acks: list[tuple[float, float]] = field(default_factory=list)  # (arrival, seconds to ack), since started
    samples: list[dict[str, Any]] = field(default_factory=list)
    last_event: float | None = None  # since started
    all_decided: float | None = None
    all_told: float | None = None
    told: int = 0
    decided: int = 0
    slack: dict[str, Any] = field(default_factory=dict)

    def now(self) -> float:
        return time.perf_counter() - self.started


async def post_event(http: aiohttp.ClientSession, base: str, body: bytes) -> float:
    started = time.perf_counter()
    headers = {"Content-Type": "application/json", **sign(body)}
    async with http.post(f"{base}/slack/events", data=body, headers=headers) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"event not acked: HTTP {response.status}")
    return time.perf_counter() - started


class Counts:
    """Decided and told-in-the-send-log counts from the bot's database, and the fake Slack's own counts."""

    def __init__(self, url: str, http: aiohttp.ClientSession, slack_url: str) -> None:
        from bot.storage.engine import create_engine

        self._engine = create_engine(url)
        self._http = http
        self._slack_url = slack_url
        finals = ", ".join(f"'{s}'" for s in FINAL)
        self._query = sa.text(
            f"SELECT SUM(CASE WHEN state IN ({finals}) THEN 1 ELSE 0 END) AS decided, "  # noqa: S608 - constants
            f"SUM(CASE WHEN state IN ({finals}) AND posted_at IS NOT NULL THEN 1 ELSE 0 END) AS told "
            "FROM sends WHERE surface = 'alert'"
        )

    async def database(self) -> tuple[int, int]:
        async with self._engine.connect() as conn:
            row = (await conn.execute(self._query)).one()
        return int(row.decided or 0), int(row.told or 0)

    async def slack(self) -> dict[str, Any]:
        async with self._http.get(f"{self._slack_url}/_storm") as response:
            answer: dict[str, Any] = await response.json()
        return answer

    async def close(self) -> None:
        await self._engine.dispose()


async def sample(run: Run, counts: Counts, pid: int, stop: asyncio.Event) -> None:
    """Every second until ``stop``: arrived, acked, decided, told, backlog, the bot's CPU and Slack's 429s."""
    cpu, at = cpu_seconds(pid), time.perf_counter()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)
        try:
            (decided, told_db), slack = await asyncio.gather(counts.database(), counts.slack())
        except Exception as exc:  # a missed sample is a gap in the curve, not a failed run
            print(f"sample failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        now_cpu, now = cpu_seconds(pid), time.perf_counter()
        run.decided, run.told, run.slack = decided, slack["threads"], slack
        run.samples.append(
            {
                "t": round(run.now(), 2),
                "arrived": run.arrived,
                "acked": run.acked,
                "decided": decided,
                "told": run.told,
                "told_in_send_log": told_db,
                "backlog": run.arrived - run.told,
                "undecided": run.arrived - decided,
                "bot_cpu": round((now_cpu - cpu) / (now - at), 2),
                "posts_429": slack["calls"].get("chat.postMessage:429", 0),
                "load1": os.getloadavg()[0],
            }
        )
        cpu, at = now_cpu, now


async def storm(run: Run, base: str, slack_url: str, url: str, pid: int, scenario: Storm, deadline: float) -> None:
    times = scenario.schedule()
    where = scenario.channel_of()
    bodies = [
        event_callback(alert(i, scenario.distinct), channel=where[i % scenario.distinct]) for i in range(len(times))
    ]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        counts = Counts(url, http, slack_url)
        stop = asyncio.Event()

        async def one(body: bytes, at: float) -> None:
            try:
                run.acks.append((at, await post_event(http, base, body)))
                run.acked += 1
            except Exception as exc:
                run.ack_errors += 1
                print(f"event not acked: {type(exc).__name__}: {exc}", file=sys.stderr)

        run.started = time.perf_counter()
        sampler = asyncio.create_task(sample(run, counts, pid, stop))
        tasks = []
        for at, body in zip(times, bodies, strict=True):
            await asyncio.sleep(max(0.0, at - run.now()))
            run.arrived += 1
            tasks.append(asyncio.create_task(one(body, run.now())))
        run.last_event = run.now()
        await asyncio.gather(*tasks)
        try:
            while run.all_told is None and run.now() - run.last_event < deadline:
                decided, _ = await counts.database()
                told = run.told = (await counts.slack())["threads"]
                if run.all_decided is None and decided >= scenario.events:
                    run.all_decided = run.now()
                if told >= scenario.events:
                    run.all_told = run.now()
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await sampler
            run.slack = await counts.slack()
            await counts.close()


async def account(url: str, events: int) -> dict[str, Any]:
    """What the send log says: states, texts per phone, and events without a final, told outcome."""
    from bot.storage.engine import create_engine

    engine = create_engine(url)
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT surface, state, recipients, held, posted_at FROM sends"))).all()
    await engine.dispose()
    return _summarise(rows, events)


def _summarise(rows: Any, events: int) -> dict[str, Any]:
    alerts = [r for r in rows if r.surface == "alert"]
    texts: Counter[str] = Counter()
    for r in alerts:
        if r.state == "accepted":
            recipients = json.loads(r.recipients) if isinstance(r.recipients, str) else r.recipients
            held = json.loads(r.held) if isinstance(r.held, str) else (r.held or [])
            texts.update(n for n in recipients if n not in held)
    told = sum(1 for r in alerts if r.state in FINAL and r.posted_at is not None)
    return {
        "states": dict(Counter(r.state for r in alerts)),
        "texts_sent": sum(texts.values()),
        "texts_per_phone": dict(texts),
        "summaries_scheduled": sum(1 for r in rows if r.surface == "summary"),
        "unaccounted": events - told,
    }


def ack_windows(acks: list[tuple[float, float]], width: float = WINDOW) -> list[dict[str, float]]:
    """Ack percentiles per ``width`` seconds of arrivals: (window start, count, p50, p99, max), in ms."""
    windows: dict[int, list[float]] = {}
    for at, took in acks:
        windows.setdefault(int(at // width), []).append(took)
    return [
        {
            "start_s": k * width,
            "count": len(v),
            "p50_ms": round(percentile(v, 50) * 1000, 1),
            "p99_ms": round(percentile(v, 99) * 1000, 1),
            "max_ms": round(max(v) * 1000, 1),
        }
        for k, v in sorted(windows.items())
    ]


def report(run: Run, scenario: Storm) -> dict[str, Any]:
    took = [t for _, t in run.acks]
    windows = ack_windows(run.acks)
    worst = max(windows, key=lambda w: w["p99_ms"]) if windows else None
    last = run.last_event or 0.0

    def after_last(moment: float | None) -> float | None:
        return None if moment is None else round(moment - last, 2)

    told_after = after_last(run.all_told)
    return {
        "acked": run.acked,
        "ack_errors": run.ack_errors,
        "acks_per_s": round(run.acked / last, 1) if last else None,
        "ack_p50_ms": round(percentile(took, 50) * 1000, 1) if took else None,
        "ack_p99_ms": round(percentile(took, 99) * 1000, 1) if took else None,
        "ack_max_ms": round(max(took) * 1000, 1) if took else None,
        "acked_within_3s": sum(t < 3.0 for t in took),
        "worst_window_ack_p99_ms": worst["p99_ms"] if worst else None,
        "worst_window_start_s": worst["start_s"] if worst else None,
        "last_event_s": round(last, 2),
        "last_event_to_all_decided_s": after_last(run.all_decided),
        "last_event_to_backlog_0_s": told_after,
        "drained_within_a_minute": told_after is not None and told_after <= 60,
        "peak_backlog": max((s["backlog"] for s in run.samples), default=0),
        "peak_undecided": max((s["undecided"] for s in run.samples), default=0),
        "told_in_slack": run.slack.get("threads", 0),
        "thread_replies": run.slack.get("thread_replies", 0),
        "slack_calls": run.slack.get("calls", {}),
    }


@contextmanager
def storm_fakes(
    channels: int, slack_limit: bool, tiers: bool, d7_delay: float, reports: bool
) -> Iterator[tuple[str, str]]:
    limit = ("--no-channel-limit",) if not slack_limit else ("--tiers",) if tiers else ()
    with (
        _process("bench._storm_fakes", "slack", "--channels", str(channels), *limit) as slack_url,
        _process("bench._storm_fakes", "d7", "--delay", str(d7_delay), *(("--reports",) if reports else ())) as d7_url,
    ):
        yield slack_url, d7_url


async def d7_counts(d7_url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{d7_url}/_storm") as response:
        answer: dict[str, Any] = await response.json()
    return answer


async def report_to(d7_url: str, base: str) -> None:
    """Where the fake D7 posts its delivery reports: the bot's own loopback address."""
    async with aiohttp.ClientSession() as http, http.post(f"{d7_url}/_report_to", json={"base": base}) as response:
        response.raise_for_status()


def chart(path: Path, run: Run, result: dict[str, Any], database: str, scenario: Storm) -> Path:
    from bench._charts import storm_chart

    samples = run.samples
    title = (
        f"alert storm: {scenario.events:,} alerts in {scenario.seconds:g} s, {scenario.channels} channel(s), {database}"
    )
    return storm_chart(
        path,
        {  # the backlog drawn last, over the undecided (never above it)
            "undecided (arrived, no final state)": [(s["t"], s["undecided"]) for s in samples],
            "backlog (arrived, not yet told in Slack)": [(s["t"], s["backlog"]) for s in samples],
        },
        [(w["start_s"] + WINDOW / 2, w["p99_ms"], w["max_ms"]) for w in ack_windows(run.acks)],
        title=title,
        last_event_s=result["last_event_s"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", "--alerts", type=int, default=1000, help="alerts in the storm")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, default=10.0, help="how long the storm lasts")
    length.add_argument("--minutes", type=float, help="the same, in minutes")
    parser.add_argument("--channels", type=int, default=1, help="alert channels the alerts are spread over")
    parser.add_argument("--distinct", type=int, help="different alerts among the events (default: a quarter)")
    parser.add_argument("--no-limits", action="store_true", help="no per-phone cap; every event a different alert")
    parser.add_argument("--arrivals", choices=["even", "poisson"], default="even")
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument(
        "--slack-limit",
        action=argparse.BooleanOptionalAction,
        help="Slack's per-channel limit in the fake and the bot's pacing (default: on when the storm is within it)",
    )
    parser.add_argument(
        "--reports", action="store_true", help="D7 reports each text sent, then delivered (the bot has PUBLIC_URL)"
    )
    parser.add_argument("--slack-tiers", action="store_true", help="Slack's per-method tiers too (chat.update 50/min)")
    parser.add_argument("--deadline", type=float, default=DEADLINE, help="seconds after the last alert, at most")
    parser.add_argument("--d7-delay", type=float, default=0.05)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--chart", type=Path, help="write backlog and acks over time as a PNG here")
    parser.add_argument("--series", type=Path, help="write the samples and ack windows as JSON here")
    args = parser.parse_args()
    seconds = args.minutes * 60 if args.minutes is not None else args.seconds
    if args.events < 1 or seconds <= 0 or args.channels < 1:
        parser.error("--events, --seconds and --channels must be positive")
    distinct = args.distinct or (args.events if args.no_limits else max(1, args.events // 4))
    scenario = Storm(args.events, seconds, args.channels, min(distinct, args.events), not args.no_limits,
                     args.arrivals, args.seed)  # fmt: skip
    within = scenario.per_channel_rate <= SLACK_POSTS_PER_SECOND
    slack_limit = within if args.slack_limit is None else args.slack_limit
    run, load_before = Run(), os.getloadavg()
    with (
        tempfile.TemporaryDirectory() as tmp,
        storm_fakes(args.channels, slack_limit, args.slack_tiers, args.d7_delay, args.reports) as fakes,
    ):
        slack_url, d7_url = fakes
        work = Path(tmp)
        (work / "policy.yml").write_text(scenario.policy())
        url = database_url(args.database, work)
        env = bot_env(slack_url, d7_url, work / "policy.yml", url) | {"SLACK_CHANNEL_PACE": "1" if slack_limit else "0"}
        if args.reports:
            env |= {"PUBLIC_URL": "https://relay.example.com", "D7_REPORT_SECRET": REPORT_SECRET}
        with bot_process(env, work) as (base, pid):
            if args.reports:
                asyncio.run(report_to(d7_url, base))
            cpu = cpu_seconds(pid)
            asyncio.run(storm(run, base, slack_url, url, pid, scenario, args.deadline))
            result = report(run, scenario)
            result["bot_cpu_s"] = round(cpu_seconds(pid) - cpu, 2)
            result["bot_peak_rss_mb"] = round(peak_rss_mb(pid) or 0, 1)
        result |= asyncio.run(account(url, args.events))
        d7 = asyncio.run(d7_counts(d7_url))
        result["texts_d7_received"] = d7["texts"]
        if args.reports:
            result["reports_posted"] = d7["reports"]
    setup = {
        "database": args.database,
        "events": scenario.events,
        "seconds": scenario.seconds,
        "channels": scenario.channels,
        "arrivals": scenario.arrivals,
        "distinct_alerts": scenario.distinct,
        "per_phone_limit": scenario.limits,
        "alerts_per_channel_per_s": round(scenario.per_channel_rate, 3),
        "slack_channel_limit": slack_limit,
        "slack_tiers": args.slack_tiers and slack_limit,
        "delivery_reports": args.reports,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    if args.series:
        args.series.parent.mkdir(parents=True, exist_ok=True)
        args.series.write_text(json.dumps({**setup, "samples": run.samples, "ack_windows": ack_windows(run.acks)}))
    if args.chart:
        result["chart"] = str(chart(args.chart, run, result, args.database, scenario))
    print(json.dumps({**setup, **result}, indent=2))
    if result["unaccounted"] or result["ack_errors"] or run.all_told is None:
        sys.exit(1)


if __name__ == "__main__":
    main()
