"""Benchmark: 200 concurrent signed /sms requests against the bot over HTTP while D7 takes 1 s to answer.

    python -m bench.ack_latency [--requests 200] [--d7-delay 1.0]

Reports p50/p99 time to the HTTP response (Slack's ack) and the time from the first request until every result
is posted in its thread. The bot runs as its own process (`python -m bot`), the fake D7 in another, the fake
Slack Web API in this one; all on 127.0.0.1. Bounded by --requests and a 60 s deadline.
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

from bench._bot import bot_env, bot_process, cpu_seconds, percentile, post_command, wait_for_results
from bench._fake import loopback_fakes
from tests.harness import slash_command

DEADLINE = 60.0


async def fire(base: str, slack_url: str, count: int) -> dict[str, float]:
    bodies = [
        slash_command("/sms", f"+1415555{i % 10000:04d} load test {i}", response_url=f"{slack_url}/response/bench/{i}")
        for i in range(count)
    ]
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(connector=connector) as http:
        first = time.perf_counter()
        acks = await asyncio.gather(*(post_command(http, base, b) for b in bodies))
        all_acked = time.perf_counter() - first
        seen = await wait_for_results(http, slack_url, count, first, DEADLINE)
        all_posted = time.perf_counter() - first
    return {
        "requests": count,
        "ack_p50_ms": round(percentile(acks, 50) * 1000, 1),
        "ack_p99_ms": round(percentile(acks, 99) * 1000, 1),
        "ack_max_ms": round(max(acks) * 1000, 1),
        "all_acked_s": round(all_acked, 3),
        "all_results_posted_s": round(all_posted, 3),
        "accepted": seen["accepted"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--d7-delay", type=float, default=1.0)
    args = parser.parse_args()
    with loopback_fakes(args.d7_delay) as (work, slack_url, d7_url):
        env = bot_env(slack_url, d7_url, work / "policy.yml", f"sqlite:///{work / 'bot.db'}")
        with bot_process(env, work) as (base, pid):
            cpu_before = cpu_seconds(pid)
            result = asyncio.run(fire(base, slack_url, args.requests))
            result["bot_cpu_s"] = round(cpu_seconds(pid) - cpu_before, 3)
    print(json.dumps({"d7_delay_s": args.d7_delay, **result}, indent=2))


if __name__ == "__main__":
    main()
