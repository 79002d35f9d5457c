"""Benchmark: a broadcast — one /sms to a 1,000-number contact group, then D7's 1,000 delivery reports.

    python -m bench.broadcast [--numbers 1000] [--d7-delay 0.05] [--database sqlite|postgresql] [--chart PATH]

The policy allows the group (``max_recipients: 1000``). One signed /sms goes to the bot; the fake D7 (a process of
its own, answering after --d7-delay, refusing any request over ``MAX_RECIPIENTS_PER_REQUEST`` recipients) takes the
send in requests; then the fake D7 posts a "delivered" report for every recipient, as D7 posts them (form data, 20 in
flight), to the bot's report URL. Reports:

- the ack time of the /sms;
- the D7 requests (from the fake's side: how many, recipients in each) and the time from the ack until the bot has
  D7's answer to all of them (the send ``accepted`` in the send log);
- the time from the first report until all of them are applied (every recipient ``delivered``) and until the card
  shows it; how long posting the reports took and how many were answered 200;
- the result card's calls: chat.postMessage in the send's thread, chat.update of the card (coalesced: not one per
  report), 429s; whether Slack refused anything (Block Kit limits);
- the bot process's RSS: before the /sms, its peak during the run (sampled every 10 ms, and the kernel's VmHWM),
  and the growth.

The bot runs as its own process (``SLACK_CHANNEL_PACE=0`` like the other benches: the fake Slack has no per-channel
limit); the fakes as two more; all on 127.0.0.1. Bounded: 120 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._bot import bot_env, bot_process, database_url, peak_rss_mb, post_command
from bench._fake import _process, fake_slack_process
from tests.harness import everyone_policy, slash_command

DEADLINE = 120.0
SECRET = "bench-broadcast-secret-0123456789"  # noqa: S105 - a loopback benchmark's own
TEXT = "Water main break: the office is closed today. Work from home; updates in #ops."


def policy(numbers: list[str]) -> str:
    return everyone_policy(numbers, show_numbers="masked", max_recipients=len(numbers))


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler:
    """The process's RSS every ``every`` seconds, in a thread (the load generator's loop is busy)."""

    def __init__(self, pid: int, every: float = 0.01) -> None:
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float]] = []  # (monotonic, MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            mb = rss_mb(self.pid)
            if mb is not None:
                self.samples.append((time.monotonic(), mb))
            self._stop.wait(self.every)

    @property
    def peak(self) -> float:
        return max((mb for _, mb in self.samples), default=0.0)


async def scalar(url: str, query: str) -> Any:
    from bot.storage.engine import create_engine

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(sa.text(query))).scalar_one_or_none()
    finally:
        await engine.dispose()


async def wait_for(what: str, check: Any, since: float) -> float:
    """Poll ``check()`` until it is true; the monotonic time it first was."""
    while not await check():
        if time.monotonic() - since > DEADLINE:
            raise RuntimeError(f"{what}: not within {DEADLINE:.0f}s")
        await asyncio.sleep(0.02)
    return time.monotonic()


async def run(base: str, pid: int, slack_url: str, d7_url: str, url: str, numbers: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:

        async def calls(method: str) -> list[dict[str, Any]]:
            async with http.get(f"{slack_url}/_calls/{method}") as response:
                result: list[dict[str, Any]] = await response.json()
                return result

        before = rss_mb(pid) or 0.0
        with RssSampler(pid) as rss:
            began = time.monotonic()
            ack = await post_command(http, base, slash_command("/sms", f"group:everyone {TEXT}"))

            async def accepted() -> bool:
                return await scalar(url, "SELECT count(*) FROM sends WHERE state = 'accepted'") == 1

            async def told() -> bool:
                return await scalar(url, "SELECT count(*) FROM sends WHERE posted_at IS NOT NULL") == 1

            all_accepted = await wait_for("D7's answers", accepted, began)
            await wait_for("the result card", told, began)
            async with http.get(f"{d7_url}/_sends") as response:
                requests = await response.json()
            result_ts = await scalar(url, "SELECT result_ts FROM sends")

            reports_began = time.monotonic()
            async with http.post(f"{d7_url}/_reports", json={"to": base, "status": "delivered"}) as response:
                emitted = await response.json()
            reports_posted = time.monotonic()

            async def applied() -> bool:
                query = "SELECT count(*) FROM recipient_statuses WHERE status = 'delivered'"
                return await scalar(url, query) == numbers

            all_applied = await wait_for("every report applied", applied, reports_began)

            async def card_final() -> bool:
                updates = [u for u in await calls("chat.update") if u.get("ts") == result_ts]
                due = await scalar(url, "SELECT count(*) FROM sends WHERE card_due_at IS NOT NULL")
                return bool(updates) and f"{numbers} delivered" in json.dumps(updates[-1]["blocks"]) and due == 0

            card_shown = await wait_for("the card showing every report", card_final, reports_began)
        updates = [u for u in await calls("chat.update") if u.get("ts") == result_ts]
        thread = [p for p in await calls("chat.postMessage") if p.get("thread_ts")]
    sizes = [r["recipients"] for r in requests]
    return {
        "ack_ms": round(ack * 1000, 1),
        "d7_requests": len(requests),
        "recipients_per_request": sorted(set(sizes)),
        "recipients_sent": sum(sizes),
        "ack_to_all_accepted_s": round(all_accepted - began - ack, 3),
        "reports": numbers,
        "reports_answered_200": emitted["answered"],
        "reports_posted_in_s": round(reports_posted - reports_began, 3),
        "first_report_to_all_applied_s": round(all_applied - reports_began, 3),
        "first_report_to_card_final_s": round(card_shown - reports_began, 3),
        "card_chat_update_calls": len(updates),
        "thread_chat_postMessage_calls": len(thread),
        "rss_before_mb": round(before, 1),
        "rss_peak_mb": round(rss.peak, 1),
        "rss_peak_growth_mb": round(rss.peak - before, 1),
        "vm_hwm_mb": round(peak_rss_mb(pid) or 0.0, 1),
        "_rss": [(t - began, mb) for t, mb in rss.samples],
        "_marks": {
            "/sms acked": ack,
            "D7 accepted all": all_accepted - began,
            "reports start": reports_began - began,
            "all reports applied": all_applied - began,
            "card final": card_shown - began,
        },
    }


def rss_chart(path: Path, samples: list[tuple[float, float]], marks: dict[str, float], *, title: str) -> Path:
    """The bot's RSS (MB) over the run (seconds since the /sms), with the run's moments marked."""
    from bench import _charts

    figure, axes = _charts.plt.subplots(figsize=_charts.SIZE)
    axes.plot([t for t, _ in samples], [mb for _, mb in samples], label="RSS (sampled every 10 ms)")
    for i, (name, at) in enumerate(marks.items()):
        axes.axvline(at, color=f"C{i + 1}", linewidth=1, linestyle="--", label=f"{name} ({at:.2f} s)")
    axes.set(xlabel="seconds since the /sms", ylabel="RSS (MB)", title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    return _charts._save(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numbers", type=int, default=1000, help="phones in the contact group")
    parser.add_argument("--d7-delay", type=float, default=0.05, help="seconds the fake D7 takes to answer a send")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--chart", type=Path, help="draw the bot's RSS over the run as a PNG here")
    args = parser.parse_args()
    from bot.d7.wire import MAX_RECIPIENTS_PER_REQUEST

    numbers = [f"+1415555{i:04d}" for i in range(args.numbers)]
    limit = str(MAX_RECIPIENTS_PER_REQUEST)  # the fake refuses (422) any request over it
    with (
        tempfile.TemporaryDirectory() as tmp,
        fake_slack_process("--channel", "C0OPS", "--no-channel-limit") as slack_url,
        _process("tests.fakes.d7", "--delay", str(args.d7_delay), "--max-recipients", limit) as d7_url,
    ):
        work = Path(tmp)
        (work / "policy.yml").write_text(policy(numbers))
        url = database_url(args.database, work)
        env = bot_env(slack_url, d7_url, work / "policy.yml", url)
        env |= {"PUBLIC_URL": "https://relay.example.com", "D7_REPORT_SECRET": SECRET}
        with bot_process(env, work) as (base, pid):
            result = asyncio.run(run(base, pid, slack_url, d7_url, url, args.numbers))
    samples, marks = result.pop("_rss"), result.pop("_marks")
    if args.chart is not None:
        title = f"The bot's RSS during a {args.numbers}-number broadcast ({args.database})"
        rss_chart(args.chart, samples, marks, title=title)
    print(
        json.dumps(
            {"database": args.database, "numbers": args.numbers, "d7_delay_s": args.d7_delay, **result}, indent=2
        )
    )


if __name__ == "__main__":
    main()
