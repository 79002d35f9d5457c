"""Benchmark: SMS sends through the D7 client against the loopback fake D7 answering after 50 ms.

    python -m bench.d7_client [--sends 500] [--concurrency 50] [--delay 0.05]

Prints sends/s and p50/p99 latency for the concurrent run, and a short sequential run for comparison.
Traffic goes only to 127.0.0.1; the run is bounded by --sends and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._bot import percentile
from bench._fake import fake_d7_process
from bot.d7 import D7Client
from tests.fakes.d7 import TOKEN


async def run(url: str, sends: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)
    async with D7Client(SecretStr(TOKEN), base_url=url) as client:
        await client.send_sms(["+14155550100"], "warm-up")

        async def one(i: int) -> None:
            async with gate:
                started = time.perf_counter()
                result = await client.send_sms([f"+1415555{i % 10000:04d}"], f"bench message {i}", originator="Bench")
                latencies.append(time.perf_counter() - started)
                assert result.accepted

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(sends)))
        elapsed = time.perf_counter() - started
    return {
        "sends": sends,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "sends_per_s": round(sends / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sends", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.05, help="fake D7 answer delay, seconds")
    parser.add_argument("--sequential", type=int, default=40, help="sends in the sequential comparison run")
    args = parser.parse_args()
    with fake_d7_process(args.delay) as url:
        concurrent = asyncio.run(run(url, args.sends, args.concurrency))
        sequential = asyncio.run(run(url, args.sequential, 1)) if args.sequential else None
    print(json.dumps({"d7_delay_ms": args.delay * 1000, "concurrent": concurrent, "sequential": sequential}, indent=2))


if __name__ == "__main__":
    main()
