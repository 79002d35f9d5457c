"""Benchmark: acks under a burst, the bot against a bare Bolt app, side by side, same fakes, same run.

    python -m bench.vs_bare_bolt [--requests 200] [--threads 50] [--d7-delay 1.0] [--runs 1] [--chart PATH]

200 signed ``/sms`` requests from 50 client threads (urllib) while D7 takes 1 s to answer, first to the bot
(``python -m bot``: policy, durable intent recorded before the ack), then to a bare Bolt ``AsyncApp`` that acks and
sends (``bench._bare_bolt``: no policy, no database), each started the same way against the same loopback fakes.
Prints ack p50/p99 for both and the ratio; --chart writes both sides' ack distributions (every run's acks
together) as a PNG (``bench._charts``, the ``bench`` extra). Bounded by --requests; stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._bot import bot_env, bot_process, percentile
from bench._fake import loopback_fakes
from tests.harness import sign, slash_command


def burst(base: str, slack_url: str, requests: int, threads: int, tag: str) -> list[float]:
    bodies = [
        slash_command("/sms", f"+1415555{i % 10000:04d} {tag} {i}", response_url=f"{slack_url}/response/{tag}/{i}")
        for i in range(requests)
    ]

    def one(body: bytes) -> float:
        request = urllib.request.Request(  # noqa: S310 - loopback only
            f"{base}/slack/events",
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", **sign(body)},
            method="POST",
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback only
            response.read()
            if response.status != 200:
                raise RuntimeError(f"ack {response.status}")
        return time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, bodies))


def measure(env: dict[str, str], work: Path, slack_url: str, args: argparse.Namespace, tag: str) -> list[float]:
    """The burst's ack times, in seconds."""
    with bot_process(env, work) as (base, _):
        burst(base, slack_url, 10, 10, f"{tag}-warm")  # warm-up: imports, connections, first SQL
        time.sleep(args.d7_delay + 0.5)
        return burst(base, slack_url, args.requests, args.threads, tag)


def summary(acks: list[float]) -> dict[str, float]:
    return {"ack_p50_ms": round(percentile(acks, 50) * 1000, 1), "ack_p99_ms": round(percentile(acks, 99) * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--d7-delay", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=1, help="alternate bot and bare Bolt this many times")
    parser.add_argument("--chart", type=Path, help="write both sides' ack distributions (CDF) as a PNG")
    args = parser.parse_args()
    runs = []
    acks: dict[str, list[float]] = {"bot": [], "bare Bolt": []}
    with loopback_fakes(args.d7_delay) as (work, slack_url, d7_url):
        env = bot_env(slack_url, d7_url, work / "policy.yml", f"sqlite:///{work / 'bot.db'}")
        for run in range(args.runs):
            ours = measure(env, work, slack_url, args, f"bot{run}")
            os.environ["BENCH_BOT_CMD"] = "-m bench._bare_bolt"
            try:
                bare = measure(env, work, slack_url, args, f"bare{run}")
            finally:
                os.environ.pop("BENCH_BOT_CMD", None)
            acks["bot"] += ours
            acks["bare Bolt"] += bare
            ratio = round(percentile(ours, 99) / percentile(bare, 99), 2)
            runs.append({"bot": summary(ours), "bare_bolt": summary(bare), "p99_ratio": ratio})
    print(
        json.dumps(
            {"requests": args.requests, "threads": args.threads, "d7_delay_s": args.d7_delay, "runs": runs}, indent=2
        )
    )
    if args.chart:
        from bench._charts import ack_cdf

        title = f"{args.requests} signed /sms at once ({args.threads} threads), D7 at {args.d7_delay:g} s"
        ack_cdf(args.chart, acks, title=f"{title}, {args.runs} run(s) a side")


if __name__ == "__main__":
    main()
