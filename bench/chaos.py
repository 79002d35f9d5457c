"""Chaos soak: replicas of the bot under a steady mix of work and random faults, then an invariant checker.

    python -m bench.chaos --seed 1 --minutes 20 --db postgresql [--replicas 2] [--rate 3] [--out DIR]
    python -m bench.chaos --seed 1 --minutes 2 --db sqlite

Processes on 127.0.0.1: the fake Slack and the fake D7 (``bench/_chaos_fakes.py``, each keeping every call), the
bot's replicas (``python -m bot``; two on PostgreSQL by default, one on SQLite), and this one: the load generator,
the fault scheduler and, on PostgreSQL, a TCP proxy in front of the database (``tests/faults.py``).

Load (open loop, ``--rate`` requests/s, mixed): ``/sms`` commands (numbers, and people whose profile phones are
looked up), compose form submissions, workflow ``function_executed`` steps, ``/whatsapp`` by the support group,
alert posts in alert channels (some repeated), reactions acknowledging half of the alerts, and D7's delivery reports
for every send D7 carried out. Events that are not acked are delivered again as Slack does (and 5 % are delivered
twice anyway).

Faults, one every few seconds, each for 1-10 s, drawn from ``random.Random(seed)`` and logged with their times: D7
503 / 429 / hangs past the client's timeout / refused connections; PostgreSQL stalls (packets dropped) and cuts
(connections reset); Slack 5xx / 429 / slow answers / refused connections; a replica killed (``kill -9``) or
stopped (SIGTERM), then started again. On PostgreSQL replica 0 is never signalled (its memory is what "memory flat"
measures); on SQLite the one replica is, at most every 150 s, and the database file is locked by another process
instead of the network faults.

Then a quiet period (no load, no faults) until the outbox has drained (at most ``--quiet-max`` seconds), and the
checker (``bench/_chaos_check.py``) over the fakes' logs and the database. Every file of the run is in ``--out``;
``summary.json`` holds the figures. Exit status 1 when any invariant is violated. The same seed gives the same
faults and the same requests in the same order (timing on a loaded machine still varies).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._bot import free_port, percentile
from bench._chaos_check import check, report
from bench._chaos_fakes import ALERT_CHANNELS, OPS_CHANNELS, PEOPLE, SUPPORT, SUPPORT_CHANNEL
from tests.fakes.d7 import TOKEN as D7_TOKEN
from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, TEAM_ID
from tests.harness import sign

ROOT = Path(__file__).resolve().parent.parent
REPORT_SECRET = "chaos-report-secret-0123456789"  # noqa: S105 - a test secret, the fake D7's
PUBLIC_URL = "http://relay.chaos.invalid"
SEND_DEADLINE = "2m"  # SEND_RETRY_DEADLINE: short, so no intent outlives the quiet period
ACK_TIMEOUT = 3.0  # Slack gives up on an answer after 3 s
EVENT_RETRIES = (2.0, 10.0, 30.0)  # Slack delivers an unacked event again (up to 3 times; sooner here)
HEAVY = "U0HEAVY"  # sends the most: their budget (30 messages a minute) refuses some
POLICY = f"""
version: 1
defaults:
  region: US
  max_segments: 3
  show_numbers: masked
  countries: [US, GB, AE]
  limits: {{per_user: {{messages: 30, per: 1m}}, workspace: {{messages: 1000000, per: 1d}}}}
senders:
  ops-sms:    {{via: sms, originator: OpsAlert}}
  support-wa: {{via: whatsapp, originator: "+971501234567"}}
contacts:
  oncall:    ["+14155550100", "+14155550101"]
  secondary: ["+14155550120"]
  leads:     ["+14155550130"]
rules:
  - name: ops
    slack_channels: [{", ".join(OPS_CHANNELS)}]
    users: ["*"]
    senders: [ops-sms]
    recipients: ["+1*", "group:oncall"]
    max_recipients: 5
    surfaces: [commands, forms, workflows]
    limits: {{per_channel: {{messages: 1000000, per: 1d}}}}
  - name: support
    slack_channels: [{SUPPORT_CHANNEL}]
    users: [S0SUPPORT]
    senders: [support-wa]
    recipients: ["*"]
alerts:
  - name: chaos alerts
    slack_channels: [{", ".join(ALERT_CHANNELS)}]
    match: "(?i)firing"
    from: bots
    sender: ops-sms
    to: ["group:oncall"]
    template: "{{text}}"
    dedupe_window: 10m
    ack_reactions: [white_check_mark]
    escalate: [{{after: 15s, to: ["group:secondary"]}}, {{after: 30s, to: ["group:leads"]}}]
    links: false
    limits: {{per_rule: {{messages: 1000000, per: 1h}}}}
"""

# Fault kinds and their weights; the target each acts on (one fault at a time per target).
NETWORK_FAULTS = {
    "d7_5xx": 3,
    "d7_429": 2,
    "d7_hang": 2,
    "d7_refuse": 2,
    "slack_5xx": 3,
    "slack_429": 2,
    "slack_slow": 2,
    "slack_refuse": 2,
}
PG_FAULTS = {"pg_stall": 3, "pg_cut": 3}
SQLITE_FAULTS = {"sqlite_lock": 2}
PROCESS_FAULTS = {"kill9": 1, "sigterm": 1}


@dataclass
class Fault:
    at: float  # seconds after the load started
    kind: str
    seconds: float
    replica: int | None = None
    started: float | None = None  # wall clock, once injected
    ended: float | None = None


def schedule(seed: int, seconds: float, db: str, replicas: int, every: float) -> list[Fault]:
    """The run's faults, from the seed alone: one every ``every`` seconds on average, each 1-10 s, one at a time on
    each target; process faults at least 30 s apart on PostgreSQL (150 s on SQLite)."""
    rng = random.Random(seed)
    kinds = NETWORK_FAULTS | (PG_FAULTS if db == "postgresql" else SQLITE_FAULTS) | PROCESS_FAULTS
    names, weights = list(kinds), list(kinds.values())
    spacing = 30.0 if replicas > 1 else 150.0
    faults: list[Fault] = []
    free_at: dict[str, float] = {}
    last_process = -spacing
    t = rng.uniform(2.0, every)
    while t < seconds:
        kind = rng.choices(names, weights)[0]
        duration = round(rng.uniform(1.0, 10.0), 1)
        target = "replica" if kind in PROCESS_FAULTS else kind.split("_")[0]
        start = max(t, free_at.get(target, 0.0))
        if target == "replica" and start - last_process < spacing:
            kind, target = "d7_5xx", "d7"  # too soon after the last one: a D7 outage instead
            start = max(t, free_at.get(target, 0.0))
        if start < seconds:
            replica = (1 if replicas > 1 else 0) if target == "replica" else None
            faults.append(Fault(round(start, 2), kind, duration, replica))
            # A SIGTERM's drain takes up to 25 s before the pause: the target stays busy meanwhile.
            free_at[target] = start + duration + (30.0 if kind == "sigterm" else 1.0)
            if target == "replica":
                last_process = start
        t += rng.uniform(1.0, 2 * every - 1.0)
    return faults


# ---------------------------------------------------------------- processes


@contextlib.contextmanager
def fake_process(which: str, out: Path) -> Iterator[str]:
    log = (out / f"fake-{which}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._chaos_fakes", which], cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the fake {which} did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@dataclass
class Life:
    """One process of a replica, from start to end."""

    pid: int
    started: float
    ended: float | None = None
    how: str | None = None  # kill9, sigterm, end
    rss: list[tuple[float, float]] = field(default_factory=list)  # (wall clock, MiB)


class Replica:
    """``python -m bot`` on a fixed port; started again after a fault as a supervisor would. Its D7-answer journal
    is its own, in ``out``, and the same for each of its lives: a replica killed mid-send replays it when started
    again (on PostgreSQL the bot's default, ``d7-journal-<PORT>`` in its working directory, is in the repository)."""

    def __init__(self, index: int, env: dict[str, str], out: Path) -> None:
        self.index = index
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.journal = out / f"d7-journal-{index}"
        self.env = env | {"PORT": str(self.port), "D7_JOURNAL": str(self.journal)}
        self.log = out / f"replica-{index}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.lives: list[Life] = []
        self.starts_failed = 0

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, within: float = 120.0) -> None:
        """Start and wait until it answers HTTP; a start that fails (Slack or the database down) is tried again."""
        if self.up:
            return
        deadline = time.monotonic() + within
        while True:
            with self.log.open("ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "bot"], env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
                )
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    httpx.get(f"{self.url}/healthz", timeout=1)
                    self.proc = proc
                    self.lives.append(Life(proc.pid, time.time()))
                    return
                except httpx.TransportError:
                    time.sleep(0.2)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            self.starts_failed += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica {self.index} did not come up; see {self.log}")
            time.sleep(2.0)

    def _ended(self, how: str) -> None:
        if self.lives and self.lives[-1].ended is None:
            self.lives[-1].ended, self.lives[-1].how = time.time(), how

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self._ended("kill9")

    def sigterm(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._ended("sigterm")

    def stop(self) -> None:
        if self.up:
            self.sigterm()
            self._ended("end")
            self.lives[-1].how = "end"

    def sample_rss(self) -> None:
        if not self.up or not self.lives:
            return
        assert self.proc is not None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.lives[-1].rss.append((time.time(), int(line.split()[1]) / 1024))
        except OSError:
            pass


# ---------------------------------------------------------------- faults


class Injector:
    """Turns faults on and off; every fault is logged with its wall-clock start and end."""

    def __init__(
        self, slack: str, d7: str, replicas: list[Replica], proxy: Any, sqlite_path: Path | None, out: Path
    ) -> None:
        self.slack, self.d7, self.replicas, self.proxy, self.sqlite_path = slack, d7, replicas, proxy, sqlite_path
        self.log = (out / "faults.jsonl").open("a")
        self.tasks: set[asyncio.Task[None]] = set()
        self.process_tasks: set[asyncio.Task[None]] = set()  # never cancelled: a replica is always started again
        self.busy = [asyncio.Lock() for _ in replicas]  # one process fault at a time per replica

    async def run(self, faults: list[Fault], t0: float, http: aiohttp.ClientSession) -> None:
        for fault in faults:
            await asyncio.sleep(max(0.0, t0 + fault.at - time.time()))
            task = asyncio.create_task(self._one(fault, http))
            kept = self.process_tasks if fault.kind in PROCESS_FAULTS else self.tasks
            kept.add(task)
            task.add_done_callback(kept.discard)

    async def _one(self, fault: Fault, http: aiohttp.ClientSession) -> None:
        fault.started = time.time()
        try:
            await self._inject(fault, http)
        except Exception as exc:  # a control call failed: logged, the soak goes on
            fault.kind += f" (not injected: {type(exc).__name__})"
        fault.ended = time.time()
        self.log.write(json.dumps(asdict(fault)) + "\n")
        self.log.flush()

    async def _inject(self, fault: Fault, http: aiohttp.ClientSession) -> None:
        kind, seconds = fault.kind, fault.seconds
        if kind.startswith(("d7_", "slack_")):
            base, what = (self.d7, kind[3:]) if kind.startswith("d7_") else (self.slack, kind[6:])
            body: dict[str, Any] = {"kind": what, "seconds": seconds}
            if what == "slow":
                body["delay"] = 12.0  # past the bot's 10-s Slack timeout: the answer is lost
            for attempt in range(3):  # the fake may be refusing connections a moment longer
                try:
                    async with http.post(f"{base}/_fault", json=body, timeout=aiohttp.ClientTimeout(total=5)) as answer:
                        answer.raise_for_status()
                    break
                except aiohttp.ClientConnectorError:
                    if attempt == 2:
                        raise
                    await asyncio.sleep(1.0)
            await asyncio.sleep(seconds)
        elif kind in ("pg_stall", "pg_cut"):
            await asyncio.to_thread(self.proxy.blackhole if kind == "pg_stall" else self.proxy.refuse)
            await asyncio.sleep(seconds)
            await asyncio.to_thread(self.proxy.forward)
        elif kind == "sqlite_lock":
            from tests.faults import lock_sqlite

            assert self.sqlite_path is not None

            def hold() -> None:
                with lock_sqlite(self.sqlite_path, seconds):  # type: ignore[arg-type]
                    time.sleep(seconds)

            await asyncio.to_thread(hold)
        elif kind in ("kill9", "sigterm"):
            assert fault.replica is not None
            replica, busy = self.replicas[fault.replica], self.busy[fault.replica]
            if busy.locked():  # the last one is not over (a long drain, a slow start): skipped, not stacked
                fault.kind += " (skipped: replica busy)"
                return
            async with busy:
                await asyncio.to_thread(replica.kill9 if kind == "kill9" else replica.sigterm)
                await asyncio.sleep(seconds)
                await asyncio.to_thread(replica.start)

    async def clear(self, http: aiohttp.ClientSession) -> None:
        """Every fault off; a replica stopped by a fault is started again (that fault is let finish)."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, *self.process_tasks, return_exceptions=True)
        for base in (self.slack, self.d7):
            for _ in range(30):  # a refusal may still hold the port for a few seconds
                try:
                    async with http.post(f"{base}/_clear", timeout=aiohttp.ClientTimeout(total=5)) as answer:
                        answer.raise_for_status()
                    break
                except (aiohttp.ClientError, TimeoutError):
                    await asyncio.sleep(1.0)
        if self.proxy is not None:
            await asyncio.to_thread(self.proxy.forward)
        for replica, busy in zip(self.replicas, self.busy, strict=True):
            async with busy:
                if not replica.up:
                    await asyncio.to_thread(replica.start)


# ---------------------------------------------------------------- load


@dataclass
class Sent:
    """One request of the load: what it was, and how the bot answered."""

    kind: str
    token: str
    key: str  # what the bot keys the intent on (trigger_id, view id, execution id, channel:ts)
    at: float
    outcome: str = "pending"  # ok, not_recorded, refused, error, timeout, unreachable
    ack_s: float | None = None
    tries: int = 0
    channel: str | None = None
    ts: str | None = None
    response: str | None = None  # the response_url's name


class Load:
    """The load generator: requests at ``rate`` per second, drawn from ``random.Random(seed + 1)``."""

    def __init__(self, seed: int, rate: float, replicas: list[Replica], slack: str, d7: str, out: Path) -> None:
        self.seed, self.rate, self.replicas, self.slack, self.d7 = seed, rate, replicas, slack, d7
        self.rng = random.Random(seed + 1)  # what comes when: the same for a seed
        self.route = random.Random(seed + 2)  # which replica takes a request (follows timing, so not replayed)
        self.sent: list[Sent] = []
        self.alerts: list[Sent] = []
        self.alert_texts: dict[str, str] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.reports = {"posted": 0, "failed": 0, "sends": 0}
        self.seen_sends: set[str] = set()
        self.d7_next = 0
        self.out = out
        self.i = 0

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self, until: float, http: aiohttp.ClientSession) -> None:
        kinds = {"command": 40, "form": 17, "step": 17, "whatsapp": 6, "alert": 16, "repeat": 4}
        names, weights = list(kinds), list(kinds.values())
        while True:
            await asyncio.sleep(self.rng.expovariate(self.rate))
            if time.time() >= until:
                return
            self.i += 1
            kind = self.rng.choices(names, weights)[0]
            # Each request draws from its own generator: its content does not depend on timing.
            rng = random.Random(f"{self.seed}:{self.i}")
            self._spawn(getattr(self, f"_{kind}")(self.i, rng, http))

    # -- the requests

    def _user(self, rng: random.Random) -> str:
        return HEAVY if rng.random() < 0.4 else rng.choice([*PEOPLE, "U0DAN"])

    def _numbers(self, rng: random.Random) -> str:
        picks = [f"+1415555{rng.randrange(2000, 9999):04d}" for _ in range(rng.choice([1, 1, 2]))]
        if rng.random() < 0.1:
            person = rng.choice(list(PEOPLE))
            picks.append(f"<@{person}|{person[2:].lower()}>")
        return " ".join(picks)

    def _text(self, token: str, rng: random.Random) -> str:
        return f"{token} disk at {rng.randrange(80, 100)}% on db-{rng.randrange(1, 9)}"

    async def _command(self, i: int, rng: random.Random, http: aiohttp.ClientSession, via: str = "sms") -> None:
        token = f"chaos{self.seed}c{i}"
        support = via == "whatsapp"
        user = SUPPORT[0] if support else self._user(rng)
        channel = SUPPORT_CHANNEL if support else rng.choice(OPS_CHANNELS)
        to = f"+447911{rng.randrange(100000, 999999)}" if support else self._numbers(rng)
        trigger = f"chaos.{self.seed}.{i}"
        body = urlencode(
            {
                "token": "x",
                "team_id": TEAM_ID,
                "team_domain": "chaos",
                "channel_id": channel,
                "channel_name": channel.lower(),
                "user_id": user,
                "user_name": user.lower(),
                "command": f"/{via}",
                "text": f"{to} {self._text(token, rng)}",
                "api_app_id": "A0APP",
                "is_enterprise_install": "false",
                "response_url": f"{self.slack}/response/{token}/1",
                "trigger_id": trigger,
            }
        ).encode()
        sent = Sent(via if support else "command", token, trigger, time.time(), channel=channel, response=token)
        self.sent.append(sent)
        await self._post(http, sent, body, "application/x-www-form-urlencoded", retries=())

    async def _whatsapp(self, i: int, rng: random.Random, http: aiohttp.ClientSession) -> None:
        await self._command(i, rng, http, via="whatsapp")

    async def _form(self, i: int, rng: random.Random, http: aiohttp.ClientSession) -> None:
        token = f"chaos{self.seed}f{i}"
        user, channel = self._user(rng), rng.choice(OPS_CHANNELS)
        context = {
            "surface": "command",
            "team_id": TEAM_ID,
            "user_id": user,
            "channel_id": channel,
            "response_url": f"{self.slack}/response/{token}/1",
            "opened_at": int(time.time()),
        }
        numbers = ", ".join(f"+1415555{rng.randrange(2000, 9999):04d}" for _ in range(rng.choice([1, 2])))
        values = {
            "via": {"via": {"type": "static_select", "selected_option": {"value": "sms"}}},
            "sender-sms": {"sender": {"type": "static_select", "selected_option": {"value": "ops-sms"}}},
            "numbers": {"numbers": {"type": "plain_text_input", "value": numbers}},
            "people": {"people": {"type": "multi_users_select", "selected_users": []}},
            "contacts": {"contacts": {"type": "multi_static_select", "selected_options": []}},
            "message": {"message": {"type": "plain_text_input", "value": self._text(token, rng)}},
            "when": {"when": {"type": "datetimepicker", "selected_date_time": None}},
        }
        view_id = f"VCH{self.seed:03d}{i:07d}"
        payload = {
            "type": "view_submission",
            "team": {"id": TEAM_ID},
            "user": {"id": user},
            "api_app_id": "A0APP",
            "trigger_id": f"chaos.{self.seed}.f{i}",
            "view": {
                "id": view_id,
                "team_id": TEAM_ID,
                "type": "modal",
                "callback_id": "compose",
                "private_metadata": json.dumps(context, separators=(",", ":")),
                "hash": f"{view_id}.1",
                "state": {"values": values},
            },
            "response_urls": [],
        }
        sent = Sent("form", token, view_id, time.time(), channel=channel, response=token)
        self.sent.append(sent)
        body = urlencode({"payload": json.dumps(payload)}).encode()
        await self._post(http, sent, body, "application/x-www-form-urlencoded", retries=())

    async def _step(self, i: int, rng: random.Random, http: aiohttp.ClientSession) -> None:
        token = f"chaos{self.seed}s{i}"
        user, channel = self._user(rng), rng.choice(OPS_CHANNELS)
        execution = f"Fx{self.seed:03d}{i:07d}"
        inputs = {
            "via": "sms",
            "channel": channel,
            "runner": {"id": user, "secret": f"NDE0NTIxNDg3MjQ{user}"},
            "numbers": f"+1415555{rng.randrange(2000, 9999):04d}",
            "message": self._text(token, rng),
        }
        event = {
            "type": "function_executed",
            "function": {"id": "Fn0SENDTEXT", "callback_id": "send_text", "title": "Send a text with D7"},
            "inputs": inputs,
            "function_execution_id": execution,
            "workflow_execution_id": f"Wx{execution}",
            "event_ts": f"{time.time():.6f}",
            "bot_access_token": "xwfp-workflow-token",
        }
        sent = Sent("step", token, execution, time.time(), channel=channel)
        self.sent.append(sent)
        await self._event(http, sent, event, rng, f"EvS{self.seed:03d}{i:07d}")

    async def _alert(
        self, i: int, rng: random.Random, http: aiohttp.ClientSession, repeats: Sent | None = None
    ) -> None:
        token = repeats.token if repeats is not None else f"chaos{self.seed}a{i}"
        channel = repeats.channel if repeats is not None and repeats.channel else rng.choice(ALERT_CHANNELS)
        ts = f"{1_800_000_000 + i}.{self.seed:06d}"
        text = self.alert_texts.setdefault(token, f"[FIRING] {token} probe failed on svc-{rng.randrange(1, 30)}")
        message = {
            "type": "message",
            "subtype": "bot_message",
            "bot_id": "B0GRAFANA",
            "username": "Grafana",
            "text": text,
            "ts": ts,
        }
        kind = "alert" if repeats is None else "repeat"
        sent = Sent(kind, token, f"{channel}:{ts}", time.time(), channel=channel, ts=ts)
        self.sent.append(sent)
        if repeats is None:
            self.alerts.append(sent)
            if rng.random() < 0.5:  # half are acknowledged, some before their first escalation step
                self._spawn(self._react(i, sent, rng.uniform(3.0, 25.0), rng.choice(list(PEOPLE)), http))
        await self._event(http, sent, message, rng, f"EvA{self.seed:03d}{i:07d}", channel=channel)

    async def _repeat(self, i: int, rng: random.Random, http: aiohttp.ClientSession) -> None:
        """The same alert posted again (a new message, the same words) within its rule's dedupe window."""
        recent = [a for a in self.alerts if time.time() - a.at < 300]
        await self._alert(i, rng, http, repeats=rng.choice(recent) if recent else None)

    async def _react(self, i: int, alert: Sent, after: float, user: str, http: aiohttp.ClientSession) -> None:
        await asyncio.sleep(after)
        event = {
            "type": "reaction_added",
            "user": user,
            "reaction": "white_check_mark",
            "item": {"type": "message", "channel": alert.channel, "ts": alert.ts},
            "item_user": "U0GRAFANA",
            "event_ts": f"{time.time():.6f}",
        }
        sent = Sent("reaction", alert.token, f"react:{alert.key}", time.time(), channel=alert.channel, ts=alert.ts)
        self.sent.append(sent)
        rng = random.Random(f"{self.seed}:{i}:reaction")
        await self._event(http, sent, event, rng, f"EvR{self.seed:03d}{i:07d}", channel=alert.channel)

    async def _event(
        self,
        http: aiohttp.ClientSession,
        sent: Sent,
        event: dict[str, Any],
        rng: random.Random,
        event_id: str,
        channel: str = "",
    ) -> None:
        body = json.dumps(
            {
                "token": "x",
                "team_id": TEAM_ID,
                "api_app_id": "A0APP",
                "event": ({"channel": channel, "channel_type": "channel", "event_ts": event.get("ts")} | event)
                if channel
                else event,
                "type": "event_callback",
                "event_id": event_id,
                "event_time": int(time.time()),
                "authorizations": [{"team_id": TEAM_ID, "user_id": "U0BOT", "is_bot": True}],
            }
        ).encode()
        await self._post(http, sent, body, "application/json", retries=EVENT_RETRIES)
        if sent.outcome == "ok" and rng.random() < 0.05:  # at least once: sometimes twice although acked
            await asyncio.sleep(1.0)
            await self._deliver(http, body, "application/json", retry=1)

    async def _post(
        self, http: aiohttp.ClientSession, sent: Sent, body: bytes, content_type: str, retries: tuple[float, ...]
    ) -> None:
        for attempt in range(len(retries) + 1):
            sent.tries += 1
            started = time.perf_counter()
            outcome, text = await self._deliver(http, body, content_type, retry=attempt)
            if outcome == "ok":
                sent.ack_s = time.perf_counter() - started
                sent.outcome = _read_ack(sent.kind, text)
                return
            sent.outcome = outcome
            if attempt < len(retries):
                await asyncio.sleep(retries[attempt])

    async def _deliver(
        self, http: aiohttp.ClientSession, body: bytes, content_type: str, retry: int
    ) -> tuple[str, str]:
        """POST to a replica (the other one when it cannot be reached, as a load balancer does)."""
        order = self.route.sample(self.replicas, len(self.replicas))
        outcome = "unreachable"
        for replica in order:
            headers = {"Content-Type": content_type, **sign(body, SIGNING_SECRET)}
            if retry:
                headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
            try:
                async with http.post(
                    f"{replica.url}/slack/events",
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=ACK_TIMEOUT),
                ) as answer:
                    text = await answer.text()
                    if answer.status == 200:
                        return "ok", text
                    return f"http_{answer.status}", text
            except TimeoutError:  # before OSError, of which it is one: sent, unanswered (not sent elsewhere again)
                return "timeout", ""
            except (aiohttp.ClientConnectorError, ConnectionRefusedError):
                continue  # not listening: the other replica, as a load balancer would
            except (aiohttp.ClientConnectionError, OSError):
                return "broken", ""  # sent, then the connection broke: Slack does not deliver it elsewhere
        return outcome, ""

    # -- D7's delivery reports

    async def reports_loop(self, until: list[float], http: aiohttp.ClientSession) -> None:
        while time.time() < until[0]:
            await asyncio.sleep(2.0)
            try:
                async with http.get(
                    f"{self.d7}/_accepted", params={"since": self.d7_next}, timeout=aiohttp.ClientTimeout(total=5)
                ) as answer:
                    page = await answer.json()
            except (aiohttp.ClientError, TimeoutError):
                continue
            self.d7_next = page["next"]
            for send in page["sends"]:
                if send["request_id"] in self.seen_sends:
                    continue
                self.seen_sends.add(send["request_id"])
                self.reports["sends"] += 1
                self._spawn(self._report(send, random.Random(send["request_id"]), http))

    async def _report(self, send: dict[str, Any], rng: random.Random, http: aiohttp.ClientSession) -> None:
        await asyncio.sleep(rng.uniform(0.5, 5.0))
        body = json.loads(send["body"])
        sms = send["path"] == "/messages/v1/send"
        recipients = (
            [r for m in body["messages"] for r in m["recipients"]]
            if sms
            else [r["recipient"] for m in body["messages"] for r in m["recipients"]]
        )
        for n, recipient in enumerate(recipients):
            status = "delivered" if rng.random() < 0.9 else ("undelivered" if sms else "failed")
            for _copy in range(2 if rng.random() < 0.2 else 1):  # several callbacks per message are normal
                if sms:
                    data: Any = {
                        "request_id": send["request_id"],
                        "msg_id": f"m-{send['request_id']}-{n}",
                        "recipient": recipient.lstrip("+"),
                        "originator": "OpsAlert",
                        "status": status,
                    }
                else:
                    data = {
                        "event_type": "DELIVERY_EVENTS",
                        "request_id": send["request_id"],
                        "msg_id": f"wamid-{send['request_id']}-{n}",
                        "recipient": recipient,
                        "status": status,
                        "timestamp": int(time.time() * 1000),
                    }
                await self._post_report(http, data, sms)

    async def _post_report(self, http: aiohttp.ClientSession, data: dict[str, Any], form: bool) -> None:
        for attempt in range(6):  # D7 tries again when the bot does not answer
            replica = self.route.choice(self.replicas)
            try:
                kw: dict[str, Any] = {"data": data} if form else {"json": data}
                async with http.post(
                    f"{replica.url}/d7/reports/{REPORT_SECRET}", timeout=aiohttp.ClientTimeout(total=10), **kw
                ) as answer:
                    if answer.status < 300:
                        self.reports["posted"] += 1
                        return
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            await asyncio.sleep(2.0 * (attempt + 1))
        self.reports["failed"] += 1


def _read_ack(kind: str, text: str) -> str:
    """What an HTTP 200 ack said: recorded (``ok``), not recorded, or something else refused in the ack."""
    from bot.slack import messages

    if not text.strip():
        return "ok"
    if messages.cannot_record() in text or messages.form_cannot_record() in text:
        return "not_recorded"
    return "refused"


# ---------------------------------------------------------------- the run


async def drained(database_url: str, load: Load, http: aiohttp.ClientSession, d7: str) -> dict[str, int]:
    """What is left to do: intents not final, outcomes not told, cards due, reports not applied or not posted."""
    import sqlalchemy as sa

    from bot.storage.engine import create_engine

    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            left = {
                "not_final": "SELECT count(*) FROM sends WHERE state IN ('pending', 'sending')",
                "not_told": "SELECT count(*) FROM sends WHERE posted_at IS NULL AND state NOT IN ('pending','sending')",
                "cards_due": "SELECT count(*) FROM sends WHERE card_due_at IS NOT NULL AND posted_at IS NOT NULL",
                "reports_unapplied": "SELECT count(*) FROM delivery_reports r JOIN sends s "
                "ON s.request_id = r.request_id WHERE r.applied_at IS NULL",
            }
            counts = {k: int((await conn.execute(sa.text(q))).scalar_one()) for k, q in left.items()}
    finally:
        await engine.dispose()
    try:
        async with http.get(f"{d7}/_accepted", params={"since": 0}, timeout=aiohttp.ClientTimeout(total=10)) as a:
            carried = {s["request_id"] for s in (await a.json())["sends"]}
        counts["reports_not_posted"] = len(carried - load.seen_sends) + sum(1 for _ in load.tasks)
    except (aiohttp.ClientError, TimeoutError):
        counts["reports_not_posted"] = -1
    return counts


async def soak(args: argparse.Namespace, out: Path) -> int:
    faults = schedule(args.seed, args.minutes * 60 - args.calm, args.db, args.replicas, args.fault_every)
    proxy = None
    sqlite_path: Path | None = None
    with contextlib.ExitStack() as stack:
        slack = stack.enter_context(fake_process("slack", out))
        d7 = stack.enter_context(fake_process("d7", out))
        if args.db == "postgresql":
            from tests.faults import TcpProxy
            from tests.harness import reset_postgres

            url = args.database_url
            await reset_postgres(url)
            host, port = url.split("@", 1)[1].split("/", 1)[0].split(":")
            proxy = stack.enter_context(TcpProxy(host, int(port)))
            bot_url = url.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
            check_url = url
        else:
            sqlite_path = out / "bot.db"
            bot_url = check_url = f"sqlite:///{sqlite_path}"
        (out / "policy.yml").write_text(POLICY)
        env = {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(ROOT),
            "HOST": "127.0.0.1",
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": f"{slack}/api/",
            "D7_API_TOKEN": D7_TOKEN,
            "D7_API_URL": d7,
            "BOT_POLICY": str(out / "policy.yml"),
            "DATABASE_URL": bot_url,
            "PUBLIC_URL": PUBLIC_URL,
            "D7_REPORT_SECRET": REPORT_SECRET,
            "SEND_RETRY_DEADLINE": SEND_DEADLINE,
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
        }
        replicas = [Replica(i, env, out) for i in range(args.replicas)]
        for replica in replicas:  # one after the other: the first creates the schema
            await asyncio.to_thread(replica.start)
        stack.callback(lambda: [r.stop() for r in replicas])
        rss_stop = threading.Event()

        def sample() -> None:
            while not rss_stop.wait(5.0):
                for replica in replicas:
                    replica.sample_rss()

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stack.callback(rss_stop.set)

        load = Load(args.seed, args.rate, replicas, slack, d7, out)
        injector = Injector(slack, d7, replicas, proxy, sqlite_path, out)
        t0 = time.time()
        load_until = t0 + args.minutes * 60
        reports_until = [float("inf")]
        print(
            f"chaos: seed {args.seed}, {args.minutes} min, {args.db}, {args.replicas} replica(s), "
            f"{len(faults)} faults scheduled; files in {out}",
            flush=True,
        )
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200, force_close=True)) as http:
            reporter = asyncio.create_task(load.reports_loop(reports_until, http))
            faulting = asyncio.create_task(injector.run(faults, t0, http))
            await load.run(load_until, http)
            faulting.cancel()
            await asyncio.gather(faulting, return_exceptions=True)
            await injector.clear(http)
            quiet_started = time.time()
            # The quiet period: no new requests or faults; events still being delivered again, reports still posted.
            left: dict[str, int] = {}
            while time.time() - quiet_started < args.quiet_max:
                await asyncio.sleep(3.0)
                left = await drained(check_url, load, http, d7)
                # A card Slack did not take is shown again a minute or more later: no invariant waits for it.
                if not any(n for what, n in left.items() if what != "cards_due"):
                    break
            await asyncio.sleep(3.0)  # posts whose answer is on its way
            quiet = time.time() - quiet_started
            reports_until[0] = 0.0
            await asyncio.gather(reporter, return_exceptions=True)
            for task in list(load.tasks):
                task.cancel()
            await asyncio.gather(*load.tasks, return_exceptions=True)
            for replica in replicas:
                replica.sample_rss()
            bot_acks = await asyncio.to_thread(_bot_acks, replicas)
            middle = t0 + args.minutes * 30
            # Stopped before the logs are read: nothing is posted or sent after them.
            for replica in replicas:
                await asyncio.to_thread(replica.stop)
            async with http.get(f"{slack}/_log", timeout=aiohttp.ClientTimeout(total=120)) as answer:
                slack_log = await answer.json()
            async with http.get(f"{d7}/_log", timeout=aiohttp.ClientTimeout(total=120)) as answer:
                d7_log = await answer.json()
        rows = await read_database(check_url)

    (out / "database.json").write_text(json.dumps(rows, default=str))
    (out / "slack_log.json").write_text(json.dumps(slack_log))
    (out / "d7_log.json").write_text(json.dumps(d7_log))
    (out / "requests.jsonl").write_text("".join(json.dumps(asdict(s)) + "\n" for s in load.sent))
    lives = [{"replica": r.index, **asdict(life)} for r in replicas for life in r.lives]
    (out / "replicas.json").write_text(json.dumps(lives))
    (out / "times.json").write_text(json.dumps({"t0": t0, "middle": middle, "load_ended": load_until}))
    results = check(rows, slack_log, d7_log, load.sent, lives, middle=middle, load_ended=load_until)
    acks = [s.ack_s for s in load.sent if s.ack_s is not None]
    summary = {
        "seed": args.seed,
        "minutes": args.minutes,
        "db": args.db,
        "replicas": args.replicas,
        "rate_per_s": args.rate,
        "requests": len(load.sent),
        "requests_by_kind": _count(s.kind for s in load.sent),
        "acks_by_outcome": _count(s.outcome for s in load.sent),
        "ack_p50_ms": round(percentile(acks, 50) * 1000, 1) if acks else None,
        "ack_p99_ms": round(percentile(acks, 99) * 1000, 1) if acks else None,
        "ack_max_ms": round(max(acks) * 1000, 1) if acks else None,
        # Slack gives up at 3 s (a command then shows an error; an event is delivered again).
        "acks_over_3s_by_kind": _count(s.kind for s in load.sent if s.ack_s is not None and s.ack_s > ACK_TIMEOUT),
        "bot_acks_over_2_5s": bot_acks,
        "reports": load.reports,
        "faults": len(faults),
        "faults_by_kind": _count(f.kind for f in faults),
        "sends_by_state": _count(r["state"] for r in rows["sends"]),
        "d7_send_requests": len(d7_log["requests"]),
        "slack_calls": len(slack_log["calls"]),
        "quiet_period_s": round(quiet, 1),
        "left_after_quiet": left,
        "replica_starts_failed": sum(r.starts_failed for r in replicas),
        "rss_mb": _rss(lives, t0, middle, load_until),
        "invariants": {r.name: r.violations for r in results},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(report(results))
    print(json.dumps(summary, indent=2))
    failed = [r for r in results if r.violations and not r.known]
    return 1 if failed else 0


def _bot_acks(replicas: list[Replica]) -> dict[str, list[int]]:
    """As the replicas alive at the end measured their own acks (``relay_ack_seconds``, commands and forms): per
    kind, [acks over 2.5 s, all acks]. The load generator's own figures include its own delays."""
    counts: dict[str, list[int]] = {}
    for replica in replicas:
        try:
            text = httpx.get(f"{replica.url}/metrics", timeout=10).text
        except httpx.HTTPError:
            continue
        for line in text.splitlines():
            if not line.startswith("relay_ack_seconds_"):
                continue
            name, value = line.rsplit(" ", 1)
            kind = name.split('kind="', 1)[1].split('"', 1)[0]
            seen = counts.setdefault(kind, [0, 0])
            if name.startswith("relay_ack_seconds_count"):
                seen[1] += int(float(value))
                seen[0] += int(float(value))
            elif name.startswith("relay_ack_seconds_bucket") and 'le="2.5"' in name:
                seen[0] -= int(float(value))
    return counts


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[str(item)] = counts.get(str(item), 0) + 1
    return dict(sorted(counts.items()))


def _rss(lives: list[dict[str, Any]], t0: float, middle: float, end: float) -> list[dict[str, Any]]:
    """Each process's RSS (MiB) at its start, at the soak's middle (or its own) and at its end."""
    shown = []
    for life in lives:
        samples = life["rss"]
        if not samples:
            continue
        at_middle = min(samples, key=lambda s: abs(s[0] - middle))[1]
        shown.append(
            {
                "replica": life["replica"],
                "pid": life["pid"],
                "lived_s": round((life["ended"] or end) - life["started"], 1),
                "start": round(samples[0][1], 1),
                "middle": round(at_middle, 1),
                "end": round(samples[-1][1], 1),
                "how": life["how"],
            }
        )
    return shown


async def read_database(url: str) -> dict[str, list[dict[str, Any]]]:
    import sqlalchemy as sa

    from bot.storage.engine import create_engine

    engine = create_engine(url)
    tables = {
        "sends": "SELECT * FROM sends",
        "budget_windows": "SELECT * FROM budget_windows",
        "budget_charges": "SELECT * FROM budget_charges",
        "delivery_reports": "SELECT request_id, recipient, status, applied_at FROM delivery_reports",
    }
    try:
        async with engine.connect() as conn:
            return {
                name: [dict(r._mapping) for r in (await conn.execute(sa.text(query))).all()]
                for name, query in tables.items()
            }
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--replicas", type=int, default=None, help="default: 2 on PostgreSQL, 1 on SQLite")
    parser.add_argument("--rate", type=float, default=3.0, help="requests per second (mixed)")
    parser.add_argument("--fault-every", type=float, default=5.0, help="mean seconds between faults")
    parser.add_argument("--calm", type=float, default=15.0, help="seconds at the end of the load without new faults")
    parser.add_argument("--quiet-max", type=float, default=180.0, help="longest quiet period before checking")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CHAOS_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL"),
        help="PostgreSQL (its tables are dropped first); default CHAOS_DATABASE_URL, else TEST_DATABASE_URL",
    )
    parser.add_argument("--out", type=Path, default=None, help="where the run's files go (default: a new temp dir)")
    args = parser.parse_args(argv)
    if args.replicas is None:
        args.replicas = 2 if args.db == "postgresql" else 1
    if args.db == "sqlite" and args.replicas != 1:
        parser.error("SQLite serves one replica")
    if args.db == "postgresql" and not args.database_url:
        parser.error("PostgreSQL needs --database-url (or CHAOS_DATABASE_URL / TEST_DATABASE_URL)")
    out = args.out or Path(tempfile.mkdtemp(prefix=f"chaos-{args.db}-s{args.seed}-"))
    out = out.resolve()  # the replicas run in ROOT: the paths they are given must not be relative
    out.mkdir(parents=True, exist_ok=True)
    return asyncio.run(soak(args, out))


if __name__ == "__main__":
    sys.exit(main())
