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
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._bot import bot_process, cpu_seconds, percentile
from bench._fake import fake_d7_process, fake_slack_process
from tests.fakes.d7 import TOKEN as D7_TOKEN
from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET
from tests.harness import POLICY, sign, slash_command

DEADLINE = 60.0


async def fire(base: str, slack_url: str, count: int) -> dict[str, float]:
    bodies = [
        slash_command("/sms", f"+1415555{i % 10000:04d} load test {i}", response_url=f"{slack_url}/response/bench")
        for i in range(count)
    ]
    acks: list[float] = []
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(body: bytes) -> None:
            started = time.perf_counter()
            headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(body)}
            async with http.post(f"{base}/slack/events", data=body, headers=headers) as response:
                await response.read()
                assert response.status == 200, response.status
            acks.append(time.perf_counter() - started)

        first = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        all_acked = time.perf_counter() - first
        while True:
            async with http.get(f"{slack_url}/_calls/chat.postMessage") as response:
                posts = await response.json()
            results = [p for p in posts if p.get("thread_ts") and "request_id" in p["text"]]
            if len(results) >= count:
                break
            if time.perf_counter() - first > DEADLINE:
                raise RuntimeError(f"only {len(results)} of {count} results posted after {DEADLINE}s")
            await asyncio.sleep(0.05)
        all_posted = time.perf_counter() - first
    return {
        "requests": count,
        "ack_p50_ms": round(percentile(acks, 50) * 1000, 1),
        "ack_p99_ms": round(percentile(acks, 99) * 1000, 1),
        "ack_max_ms": round(max(acks) * 1000, 1),
        "all_acked_s": round(all_acked, 3),
        "all_results_posted_s": round(all_posted, 3),
        "accepted": sum("Accepted by D7" in p["text"] for p in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--d7-delay", type=float, default=1.0)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        fake_slack_process("--channel", "C0OPS", "--usergroup", "S0SUPPORT=") as slack_url,
        fake_d7_process(args.d7_delay) as d7_url,
    ):
        work = Path(tmp)
        (work / "policy.yml").write_text(POLICY)
        env = {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": f"{slack_url}/api/",
            "D7_API_TOKEN": D7_TOKEN,
            "D7_API_URL": d7_url,
            "BOT_POLICY": str(work / "policy.yml"),
            "DATABASE_URL": f"sqlite:///{work / 'bot.db'}",
            "LOG_LEVEL": "WARNING",
        }
        with bot_process(env, work) as (base, pid):
            cpu_before = cpu_seconds(pid)
            result = asyncio.run(fire(base, slack_url, args.requests))
            result["bot_cpu_s"] = round(cpu_seconds(pid) - cpu_before, 3)
    print(json.dumps({"d7_delay_s": args.d7_delay, **result}, indent=2))


if __name__ == "__main__":
    main()
