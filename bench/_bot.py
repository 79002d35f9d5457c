"""Run ``python -m bot`` as a child process against loopback fakes, for benchmarks."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def bot_process(env: dict[str, str], workdir: Path) -> Iterator[tuple[str, int]]:
    """Start the bot with ``env`` (plus PATH/PYTHONPATH and a free PORT); yield its base URL and pid; stop it."""
    port = free_port()
    full = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "HOST": "127.0.0.1", "PORT": str(port), **env}
    log = (workdir / "bot.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, *(os.environ.get("BENCH_BOT_CMD") or "-m bot").split()],
        env=full,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bot exited with {proc.returncode}: {(workdir / 'bot.log').read_text()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("bot did not come up")
            time.sleep(0.1)
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def bot_env(slack_url: str, d7_url: str, policy: Path, database_url: str) -> dict[str, str]:
    """The bot's settings for a benchmark against the loopback fakes. Their fake Slack has no per-channel limit
    (``--no-channel-limit``) and the bot does not pace ahead of one: a benchmark's thousand posts in #ops measure
    the bot, not Slack's post a second per channel (``bench.channel_burst`` measures that)."""
    from tests.fakes.d7 import TOKEN as D7_TOKEN
    from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET

    return {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": f"{slack_url}/api/",
        "D7_API_TOKEN": D7_TOKEN,
        "D7_API_URL": d7_url,
        "BOT_POLICY": str(policy),
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        "SLACK_CHANNEL_PACE": "0",
    }


async def post_command(http: aiohttp.ClientSession, base: str, body: bytes) -> float:
    """POST a slash command signed as Slack signs it; return the seconds until the ack.

    A valid send is acked with an empty 200; anything else (an error in the ack) stops the benchmark.
    """
    from tests.harness import sign

    started = time.perf_counter()
    headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(body)}
    async with http.post(f"{base}/slack/events", data=body, headers=headers) as response:
        text = await response.text()
        if response.status != 200 or text:
            raise RuntimeError(f"ack {response.status}: {text}")
    return time.perf_counter() - started


async def wait_for_results(
    http: aiohttp.ClientSession, slack_url: str, count: int, since: float, deadline: float
) -> dict[str, int]:
    """Poll the fake Slack until ``count`` results are posted in threads; raise after ``deadline`` seconds."""
    while True:
        async with http.get(f"{slack_url}/_replies") as response:
            seen: dict[str, int] = await response.json()
        if seen["results"] >= count:
            return seen
        if time.perf_counter() - since > deadline:
            raise RuntimeError(f"only {seen['results']} of {count} results posted after {deadline}s")
        await asyncio.sleep(0.05)


def database_url(choice: str, work: Path) -> str:
    """``sqlite``: a file in ``work``; ``postgresql``: TEST_DATABASE_URL, its tables dropped first."""
    if choice != "postgresql":
        return f"sqlite:///{work / 'bot.db'}"
    from tests.harness import reset_postgres

    url = os.environ.get("TEST_DATABASE_URL") or sys.exit("set TEST_DATABASE_URL for --database postgresql")
    asyncio.run(reset_postgres(url))
    return url
