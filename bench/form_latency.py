"""Benchmark: the compose form within Slack's 3-second windows while every Slack call takes 200 ms.

    python -m bench.form_latency [--runs 20] [--people 20] [--slack-latency 0.2] [--database sqlite|postgresql]

Each run, one after the other: "Text this message" on a message mentioning --people people, then the form
submitted with --people other people picked. Measured from the moment the signed request is posted:

- ``open``: until Slack has taken views.open (the trigger_id it carries is good for 3 s);
- ``form``: until Slack has answered the views.update that shows the form, the mentioned people's names in it;
- ``submit``: until the submission's HTTP answer (Slack's ack; it must come within 3 s, and be empty: recorded).

Every run mentions and picks people never looked up before (no cache helps); the policy's user group (a rule in
#ops names one) is looked up in the first run and cached after. Target: open, form and submit under 1.5 s.
The bot runs as its own process and the fake D7 in another; the fake Slack Web API (which the latency needs to be
set on) serves from a thread of this one. All on 127.0.0.1. Bounded by --runs and 30 s per step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._bot import bot_env, bot_process, cpu_seconds, database_url, percentile
from bench._fake import bench_policy, fake_d7_process
from tests.fakes.slack import TEAM_ID, FakeSlack
from tests.harness import POLICY, sign

STEP_DEADLINE = 30.0
BENCH_POLICY = bench_policy(POLICY).replace("max_recipients: 5", "max_recipients: 100") + (
    """
  - name: leads on WhatsApp
    slack_channels: [C0OPS]
    users: [S0LEADS]
    senders: [support-wa]
    recipients: ["*"]
"""
)


def mentioned(run: int, people: int) -> list[str]:
    return [f"U0M{run:03d}{j:03d}" for j in range(people)]


def picked(run: int, people: int) -> list[str]:
    return [f"U0S{run:03d}{j:03d}" for j in range(people)]


def fake_slack(runs: int, people: int, latency: float) -> FakeSlack:
    fake = FakeSlack()
    fake.add_channel("C0OPS")
    fake.add_user("U0ALICE", "alice", "+1 415 555 0100")
    fake.state.usergroups |= {"S0SUPPORT": [], "S0LEADS": ["U0LEAD"]}
    n = 0
    for run in range(runs):
        for user_id in mentioned(run, people) + picked(run, people):
            n += 1
            fake.add_user(user_id, f"person{n}", f"+1 415 {200 + n // 10000:03d} {n % 10000:04d}")
    fake.relax_rates()  # the results' posts are not measured; no per-channel limit to wait out at the end
    fake.latency(latency)  # every method, and response_url posts
    return fake


async def post(http: aiohttp.ClientSession, base: str, fake: FakeSlack, payload: dict[str, Any]) -> str:
    """POST an interaction payload signed as Slack signs it (its trigger issued now); the answer's body."""
    body = urlencode({"payload": json.dumps(payload)}).encode()
    if "trigger_id" in payload and hasattr(fake, "issue_trigger"):
        fake.issue_trigger(payload["trigger_id"])  # a strict fake: views.open has 3 s from now
    headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(body)}
    async with http.post(f"{base}/slack/events", data=body, headers=headers) as response:
        text = await response.text()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {text}")
        return text


async def until(what: str, ready: Any, started: float) -> float:
    """Seconds from ``started`` until ``ready()`` holds (polled every 2 ms)."""
    while not ready():
        if time.perf_counter() - started > STEP_DEADLINE:
            raise RuntimeError(f"{what} did not happen within {STEP_DEADLINE}s")
        await asyncio.sleep(0.002)
    return time.perf_counter() - started


async def one_run(http: aiohttp.ClientSession, base: str, fake: FakeSlack, run: int, people: int) -> dict[str, float]:
    opens, updates = len(fake.of("views.open")), len(fake.attempts("views.update"))
    shortcut = {
        "type": "message_action",
        "callback_id": "text_this_message",
        "trigger_id": f"1337.{run}.bench",
        "team": {"id": TEAM_ID},
        "user": {"id": "U0ALICE"},
        "channel": {"id": "C0OPS"},
        "message": {
            "type": "message",
            "user": "U0ALICE",
            "ts": f"1763800000.{run:06d}",
            "text": "db-1 is down, paging " + ", ".join(f"<@{u}>" for u in mentioned(run, people)),
        },
        "response_url": fake.response_url("bench"),
        "api_app_id": "A0APP",
    }
    started = time.perf_counter()
    await post(http, base, fake, shortcut)
    opened = await until("views.open", lambda: len(fake.of("views.open")) > opens, started)

    def form_shown() -> bool:
        calls = fake.attempts("views.update")[updates:]
        return any(c.ok and "submit" in (c.params.get("view") or {}) for c in calls)

    shown = await until("the form", form_shown, started)
    view = list(fake.views.values())[-1]
    if "person" not in json.dumps(view):
        raise RuntimeError("the form does not show the mentioned people's names")

    values = {
        "via": {"via": {"type": "static_select", "selected_option": {"value": "sms"}}},
        "sender-sms": {"sender": {"type": "static_select", "selected_option": {"value": "ops-sms"}}},
        "people": {"people": {"type": "multi_users_select", "selected_users": picked(run, people)}},
        "message": {"message": {"type": "plain_text_input", "value": "db-1 is down"}},
    }
    submission = {
        "type": "view_submission",
        "team": {"id": TEAM_ID},
        "user": {"id": "U0ALICE"},
        "api_app_id": "A0APP",
        "view": {**view, "state": {"values": values}},
    }
    started = time.perf_counter()
    answer = await post(http, base, fake, submission)
    submitted = time.perf_counter() - started
    if answer:
        raise RuntimeError(f"the submission was not accepted: {answer}")
    return {"open": opened, "form": shown, "submit": submitted}


async def measure(base: str, fake: FakeSlack, runs: int, people: int) -> list[dict[str, float]]:
    async with aiohttp.ClientSession() as http:
        return [await one_run(http, base, fake, run, people) for run in range(runs)]


def summary(results: list[dict[str, float]], key: str) -> dict[str, float]:
    values = [r[key] for r in results]
    return {
        f"{key}_p50_ms": round(percentile(values, 50) * 1000, 1),
        f"{key}_p95_ms": round(percentile(values, 95) * 1000, 1),
        f"{key}_max_ms": round(max(values) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--people", type=int, default=20)
    parser.add_argument("--slack-latency", type=float, default=0.2)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        fake_slack(args.runs, args.people, args.slack_latency) as fake,
        fake_d7_process(0.0) as d7_url,
    ):
        work = Path(tmp)
        (work / "policy.yml").write_text(BENCH_POLICY)
        env = bot_env(fake.url, d7_url, work / "policy.yml", database_url(args.database, work))
        with bot_process(env, work) as (base, pid):
            cpu_before = cpu_seconds(pid)
            results = asyncio.run(measure(base, fake, args.runs, args.people))
            cpu = cpu_seconds(pid) - cpu_before
    out: dict[str, Any] = {
        "slack_latency_s": args.slack_latency,
        "runs": args.runs,
        "people": args.people,
        "database": args.database,
    }
    for key in ("open", "form", "submit"):
        out |= summary(results, key)
    out["bot_cpu_s"] = round(cpu, 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
