"""Benchmark: delivery reports arriving while sends go out — how fast D7's callbacks are answered and applied.

    python -m bench.reports [--sends 200] [--rate 200] [--database sqlite|postgresql]

First --sends /sms sends to two numbers each (through the whole pipeline, against the fake D7); then, for every
recipient, D7's reports as D7 posts them — "sent" then "delivered" as form data, and each once more (D7 repeats
itself) — paced at --rate per second (open loop), shuffled so some "sent" arrive after "delivered". Reports the
report endpoint's answer latency (p50/p99/max), and the time from the last report until every recipient's
status is "delivered" in the send log and every result message has been updated (chat.update) at least once.
The bot runs as its own process with PUBLIC_URL set; the fakes as two more; all on 127.0.0.1. Bounded: 120 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._bot import bot_env, bot_process, database_url, percentile, post_command, wait_for_results
from bench._fake import loopback_fakes
from tests.harness import slash_command

DEADLINE = 120.0
SECRET = "bench-report-secret-0123456789"  # noqa: S105 - a loopback benchmark's own


async def sent_requests(url: str) -> dict[str, list[str]]:
    """request_id → recipients of every accepted send, from the send log."""
    from bot.storage.engine import create_engine

    engine = create_engine(url)
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT request_id, recipients FROM sends WHERE state = 'accepted'"))).all()
    await engine.dispose()
    return {r[0]: (json.loads(r[1]) if isinstance(r[1], str) else r[1]) for r in rows}


async def delivered_count(url: str) -> int:
    from bot.storage.engine import create_engine

    engine = create_engine(url)
    async with engine.connect() as conn:
        query = sa.text("SELECT count(*) FROM recipient_statuses WHERE status = 'delivered'")
        count = int((await conn.execute(query)).scalar_one())
    await engine.dispose()
    return count


async def run(base: str, slack_url: str, url: str, sends: int, rate: float) -> dict[str, float]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as http:
        for i in range(sends):
            body = slash_command("/sms", f"+1415555{i % 5000:04d} +1415556{i % 5000:04d} report bench {i}")
            await post_command(http, base, body)
        await wait_for_results(http, slack_url, sends, time.perf_counter(), DEADLINE)
        sent = await sent_requests(url)
        reports = []
        for request_id, recipients in sent.items():
            for n, recipient in enumerate(recipients):
                for status in ("sent", "delivered"):
                    fields = {
                        "request_id": request_id,
                        "msg_id": f"{request_id}-{n}",
                        "recipient": recipient,
                        "originator": "OpsAlert",
                        "status": status,
                    }
                    reports += [urlencode(fields)] * 2  # D7 repeats itself
        random.Random(7).shuffle(reports)
        latencies: list[float] = []

        async def one(body: str) -> None:
            started = time.perf_counter()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            async with http.post(f"{base}/d7/reports/{SECRET}", data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"report answered {response.status}")
            latencies.append(time.perf_counter() - started)

        first = time.perf_counter()
        tasks = []
        for i, body in enumerate(reports):
            await asyncio.sleep(max(0.0, first + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(body)))
        await asyncio.gather(*tasks)
        last_report = time.perf_counter()
        expected = sum(len(r) for r in sent.values())
        while True:
            updated_cards = len(
                {c["ts"] for c in await (await http.get(f"{slack_url}/_calls/chat.update")).json() if "ts" in c}
            )
            if await delivered_count(url) >= expected and updated_cards >= len(sent):
                break
            if time.perf_counter() - last_report > DEADLINE:
                raise RuntimeError("not every report was applied in time")
            await asyncio.sleep(0.05)
        applied = time.perf_counter()
    return {
        "reports": len(reports),
        "report_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "report_p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "report_max_ms": round(max(latencies) * 1000, 1),
        "last_report_to_all_applied_s": round(applied - last_report, 2),
        "recipients_delivered": expected,
        "cards_updated": updated_cards,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sends", type=int, default=200)
    parser.add_argument("--rate", type=float, default=200, help="reports per second")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    with loopback_fakes(0.02) as (work, slack_url, d7_url):
        url = database_url(args.database, work)
        env = bot_env(slack_url, d7_url, work / "policy.yml", url)
        env |= {"PUBLIC_URL": "https://relay.example.com", "D7_REPORT_SECRET": SECRET}
        with bot_process(env, work) as (base, _pid):
            result = asyncio.run(run(base, slack_url, url, args.sends, args.rate))
    print(json.dumps({"database": args.database, "sends": args.sends, "rate_per_s": args.rate, **result}, indent=2))


if __name__ == "__main__":
    main()
