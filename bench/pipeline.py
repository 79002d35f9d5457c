"""Benchmark: sends through the full pipeline — signed request → intent → outbox worker → D7 → Slack post.

    python -m bench.pipeline [--sends 1000] [--rate 200 | --rate 0 --concurrency 50] [--d7-delay 0.05]
                             [--database sqlite|postgresql] [--budgets]

The bot runs as its own process (`python -m bot`); the fake D7 (answering after --d7-delay) and the fake Slack
Web API run as two more; the load generator sends signed /sms requests at --rate per second (open loop, like
real traffic), or keeps --concurrency in flight (closed loop, to find the ceiling). Reports acks/s,
ack p50/p99, end-to-end sends/s (first request → last result posted in its thread), and the bot's peak RSS.
PostgreSQL uses TEST_DATABASE_URL (its tables are dropped first). Bounded by --sends and a 120 s deadline.
--budgets gives the rule per-user and per-channel budgets and the workspace one (none ever reached): every send
is then counted against three budgets before D7 is called, which is what it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._bot import (
    bot_env,
    bot_process,
    cpu_seconds,
    database_url,
    peak_rss_mb,
    percentile,
    post_command,
    wait_for_results,
)
from bench._fake import loopback_fakes
from tests.harness import slash_command

DEADLINE = 120.0
WARMUP = 20


async def fire(base: str, slack_url: str, sends: int, concurrency: int, rate: float) -> dict[str, float]:
    """Closed loop (``rate`` 0): ``concurrency`` requests always in flight. Open loop: ``rate`` requests/s."""
    acks: list[float] = []
    gate = asyncio.Semaphore(concurrency if not rate else sends)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def one(i: int) -> None:
            body = slash_command(
                "/sms", f"+1415555{i % 10000:04d} pipeline {i}", response_url=f"{slack_url}/response/b/{i}"
            )
            async with gate:
                acks.append(await post_command(http, base, body))

        # Warm-up, not measured: the first requests pay one-time costs (imports, phone metadata, SQL compiling).
        for i in range(WARMUP):
            await post_command(http, base, slash_command("/sms", f"+14155550199 warm-up {i}"))
        await wait_for_results(http, slack_url, WARMUP, time.perf_counter(), DEADLINE)
        first = time.perf_counter()
        if rate:
            tasks = []
            for i in range(sends):  # paced like real traffic: latency does not feed back into the arrival rate
                await asyncio.sleep(max(0.0, first + i / rate - time.perf_counter()))
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)
        else:
            await asyncio.gather(*(one(i) for i in range(sends)))
        all_acked = time.perf_counter() - first
        await wait_for_results(http, slack_url, sends + WARMUP, first, DEADLINE)
        done = time.perf_counter() - first
    return {
        "acks_per_s": round(sends / all_acked, 1),
        "ack_p50_ms": round(percentile(acks, 50) * 1000, 1),
        "ack_p99_ms": round(percentile(acks, 99) * 1000, 1),
        "sends_per_s": round(sends / done, 1),
        "first_request_to_last_result_s": round(done, 2),
    }


def with_budgets(policy: Path) -> None:
    """The test policy with budgets no benchmark reaches: the rule's per user and per channel, the workspace's."""
    text = policy.read_text()
    budgets = "    limits: {per_user: {messages: 1000000, per: 1h}, per_channel: {messages: 1000000, per: 1d}}\n"
    text = text.replace("    max_recipients: 5\n", "    max_recipients: 5\n" + budgets, 1)
    text = text.replace(
        "limits: {per_user: none}", "limits: {per_user: none, workspace: {messages: 1000000, per: 1d}}", 1
    )
    if "per_user: {messages: 1000000" not in text or "workspace:" not in text:
        raise SystemExit("the test policy changed: cannot add budgets to it")
    policy.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sends", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200, help="requests per second (open loop); 0: closed loop")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight when --rate is 0")
    parser.add_argument("--d7-delay", type=float, default=0.05)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--budgets", action="store_true", help="count every send against three budgets")
    args = parser.parse_args()
    with loopback_fakes(args.d7_delay) as (work, slack_url, d7_url):
        if args.budgets:
            with_budgets(work / "policy.yml")
        url = database_url(args.database, work)
        env = bot_env(slack_url, d7_url, work / "policy.yml", url)
        with bot_process(env, work) as (base, pid):
            cpu = cpu_seconds(pid)
            result = asyncio.run(fire(base, slack_url, args.sends, args.concurrency, args.rate))
            result["bot_cpu_s"] = round(cpu_seconds(pid) - cpu, 2)
            result["bot_peak_rss_mb"] = round(peak_rss_mb(pid) or 0, 1)
    load = {"rate_per_s": args.rate} if args.rate else {"concurrency": args.concurrency}
    summary = {"database": args.database, "budgets": args.budgets, "sends": args.sends, **load, **result}
    print(json.dumps({"d7_delay_s": args.d7_delay, **summary}, indent=2))


if __name__ == "__main__":
    main()
