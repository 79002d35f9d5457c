"""Benchmark: a burst of /sms in one channel under Slack's per-channel post limit (1 post/s after a burst of 10, as
the fake Slack models it), through the whole app in one process.

    python -m bench.channel_burst [--sends 30]

Reports when the last text reached D7, when every announcement and every result was in the channel (seconds after
the last text), how many posts Slack answered 429, and how many announcements or results were posted more than
once (must be 0). Slack's pace bounds it: 2 posts per send at 1 post/s after the burst of 10.
Bounded by --sends and a 240 s deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.d7 import FakeD7
from tests.fakes.slack import FakeSlack
from tests.harness import no_sleep_d7, running_app

DEADLINE = 240.0
SMS = "/messages/v1/send"
POLICY = """
version: 1
defaults: {region: US, limits: {per_user: none}}
senders:
  ops-sms: {via: sms, originator: OpsAlert}
rules:
  - name: ops
    slack_channels: [C0OPS]
    users: ["*"]
    senders: [ops-sms]
    recipients: ["+1*"]

"""


async def burst(sends: int) -> dict[str, object]:
    with FakeSlack() as slack, FakeD7() as d7, tempfile.TemporaryDirectory() as tmp:
        slack.add_channel("C0OPS", name="ops")
        async with running_app(slack, d7, Path(tmp), policy=POLICY, gateway=no_sleep_d7(d7)) as app:
            started = time.monotonic()
            await asyncio.gather(*(app.command("/sms", f"+1415555{i:04d} burst {i}") for i in range(sends)))
            acked = time.monotonic()
            while len(d7.bodies(SMS)) < sends:
                assert time.monotonic() - started < DEADLINE, "texts not at D7"
                await asyncio.sleep(0.05)
            last_text = time.monotonic()
            ok = []
            while True:
                ok = [c for c in slack.attempts("chat.postMessage") if c.ok]
                top = [c for c in ok if "thread_ts" not in c.params]
                replies = [c for c in ok if "thread_ts" in c.params]
                if len(top) >= sends and len(replies) >= sends:
                    break
                assert time.monotonic() - started < DEADLINE, f"{len(top)} announcements, {len(replies)} results"
                await asyncio.sleep(0.05)
            told = time.monotonic()
            await app.settle(30)
            ok = [c for c in slack.attempts("chat.postMessage") if c.ok]
            texts = [str(c.params.get("text")) for c in ok if "thread_ts" not in c.params]
            limited = len(slack.rate_limited("chat.postMessage"))
    return {
        "sends": sends,
        "acks_s": round(acked - started, 2),
        "last_text_s": round(last_text - started, 2),
        "all_told_after_last_text_s": round(told - last_text, 2),
        "posts": len(ok),
        "posts_answered_429": limited,
        "announcements_doubled": len(texts) - len(set(texts)),
        "slack_pace_s": round(max(0.0, 2 * sends - 10) / 1.0, 1),  # 2 posts per send at 1/s after a burst of 10
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sends", type=int, default=30)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(burst(args.sends)), indent=2))


if __name__ == "__main__":
    main()
