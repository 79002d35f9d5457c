"""Benchmark: an alert storm — 1,000 monitoring posts in 10 s, as Slack message events, through the whole pipeline.

    python -m bench.alert_storm [--events 1000] [--seconds 10] [--distinct 250] [--no-limits]
                                [--database sqlite|postgresql]

Events are Grafana-style bot posts in an alert channel, signed as Slack signs them and paced evenly over
--seconds (open loop). By default they are --distinct different alerts, each posted events/distinct times, under
a rule with `dedupe_window: 10m` and `max_per_phone: {count: 5, per: 1h}` for two on-call numbers: most are
deduplicated or held for the summary. --no-limits makes every event a different alert under a rule without a
per-phone limit, so every one is texted (the D7 path under storm load).

Reports acks/s, ack p50/p99/max, texts sent (from the send log), and the time from the last event to the last
thread reply; "unaccounted" counts events without a final state and a thread reply (must be 0). The bot runs as
its own process; the fake Slack and fake D7 (answering after --d7-delay) as two more; all on 127.0.0.1.
Bounded by --events and a 180 s deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._bot import bot_env, bot_process, cpu_seconds, database_url, peak_rss_mb, percentile
from bench._fake import fake_d7_process, fake_slack_process
from tests.harness import event_callback, sign

DEADLINE = 180.0
POLICY = """
version: 1
senders:
  ops-sms: {{via: sms, originator: OpsAlert}}
contacts:
  oncall: ["+14155550100", "+14155550101"]
alerts:
  - name: storm
    slack_channels: [C0ALERTS]
    match: "(?i)firing"
    from: bots
    sender: ops-sms
    to: ["group:oncall"]
    template: "{{title}}: {{text}}"
    dedupe_window: 10m
{limits}
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


async def post_event(http: aiohttp.ClientSession, base: str, body: bytes) -> float:
    started = time.perf_counter()
    headers = {"Content-Type": "application/json", **sign(body)}
    async with http.post(f"{base}/slack/events", data=body, headers=headers) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"event not acked: HTTP {response.status}")
    return time.perf_counter() - started


async def fire(base: str, slack_url: str, events: int, seconds: float, distinct: int) -> dict[str, float]:
    bodies = [event_callback(alert(i, distinct), channel="C0ALERTS") for i in range(events)]
    acks: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=events)) as http:

        async def one(body: bytes) -> None:
            acks.append(await post_event(http, base, body))

        first = time.perf_counter()
        tasks = []
        for i, body in enumerate(bodies):  # paced: the storm's arrival rate does not depend on the bot
            await asyncio.sleep(max(0.0, first + i * seconds / events - time.perf_counter()))
            tasks.append(asyncio.create_task(one(body)))
        last_event = time.perf_counter()
        await asyncio.gather(*tasks)
        all_acked = time.perf_counter() - first
        while True:
            async with http.get(f"{slack_url}/_replies") as response:
                seen = await response.json()
            if seen["thread_replies"] >= events:
                break
            if time.perf_counter() - first > DEADLINE:
                raise RuntimeError(f"only {seen['thread_replies']} of {events} thread replies after {DEADLINE}s")
            await asyncio.sleep(0.02)
        last_reply = time.perf_counter()
    return {
        "acks_per_s": round(events / all_acked, 1),
        "ack_p50_ms": round(percentile(acks, 50) * 1000, 1),
        "ack_p99_ms": round(percentile(acks, 99) * 1000, 1),
        "ack_max_ms": round(max(acks) * 1000, 1),
        "acked_within_3s": sum(a < 3.0 for a in acks),
        "last_event_to_last_thread_reply_s": round(last_reply - last_event, 2),
        "thread_replies": seen["thread_replies"],
    }


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
    final = {"accepted", "deduplicated", "bundled", "denied", "rejected", "failed", "unknown"}
    told = sum(1 for r in alerts if r.state in final and r.posted_at is not None)
    return {
        "states": dict(Counter(r.state for r in alerts)),
        "texts_sent": sum(texts.values()),
        "texts_per_phone": dict(texts),
        "summaries_scheduled": sum(1 for r in rows if r.surface == "summary"),
        "unaccounted": events - told,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--distinct", type=int, default=250, help="different alerts among the events")
    parser.add_argument("--no-limits", action="store_true", help="every event a different alert, no per-phone cap")
    parser.add_argument("--d7-delay", type=float, default=0.05)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    distinct = args.events if args.no_limits else args.distinct
    limits = "" if args.no_limits else "    max_per_phone: {count: 5, per: 1h}"
    with (
        tempfile.TemporaryDirectory() as tmp,
        fake_slack_process("--channel", "C0ALERTS", "--no-channel-limit") as slack_url,
        fake_d7_process(args.d7_delay) as d7_url,
    ):
        work = Path(tmp)
        (work / "policy.yml").write_text(POLICY.format(limits=limits))
        url = database_url(args.database, work)
        with bot_process(bot_env(slack_url, d7_url, work / "policy.yml", url), work) as (base, pid):
            cpu = cpu_seconds(pid)
            result = asyncio.run(fire(base, slack_url, args.events, args.seconds, distinct))
            result["bot_cpu_s"] = round(cpu_seconds(pid) - cpu, 2)
            result["bot_peak_rss_mb"] = round(peak_rss_mb(pid) or 0, 1)
        result |= asyncio.run(account(url, args.events))
    setup = {
        "events": args.events,
        "seconds": args.seconds,
        "distinct_alerts": distinct,
        "per_phone_limit": not args.no_limits,
    }
    print(json.dumps({"database": args.database, **setup, **result}, indent=2))


if __name__ == "__main__":
    main()
