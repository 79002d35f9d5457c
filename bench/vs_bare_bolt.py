"""Benchmark: acks under a burst, the bot against a bare Bolt app, side by side, same fakes, same run.

    python -m bench.vs_bare_bolt [--requests 200] [--threads 50] [--d7-delay 1.0] [--runs 1]
                                 [--mode http|socket|both] [--budgets] [--background storm:RATE|broadcast:N]
                                 [--baseline announce-first|d7-first] [--database sqlite|postgresql] [--chart PATH]

HTTP (``--mode http``, the default): 200 signed ``/sms`` requests from 50 client threads (urllib) while D7 takes
1 s to answer. Socket Mode (``--mode socket``): a local Socket Mode server (``tests.fakes.socket_mode``, pointed at
by the fake Slack's ``apps.connections.open``) greets the app with ``hello`` and writes 200 ``slash_commands``
envelopes at once on its socket; an ack is the time until ``{"envelope_id": …}`` comes back. Each mode runs the
bot (``python -m bot``: policy, durable intent recorded before the ack), then a bare Bolt ``AsyncApp``
(``bench._bare_bolt``: ack, then the bot's job naively: a post, the D7 call, the result in the thread; no policy,
no database), each started the same way against the same loopback fakes, alternating ``--runs`` times.

``--budgets`` gives the bot's rule the three budgets of ``bench.pipeline --budgets`` (per user, per channel, the
workspace's; none reached), so every send is counted against them. ``--background`` adds load to the bot only,
during its burst (the baseline runs the same burst with nothing beside it: the comparison can only get harder):
``storm:RATE`` posts Grafana-style alert events (``alert``, each a different alert texted to two
on-call phones) at RATE a second to the bot, from half a second before its burst until the burst is acked (over
the socket as ``events_api`` envelopes in Socket Mode); ``broadcast:N`` sends one ``/sms`` to a contact group of
N numbers just before the burst, so the burst meets the broadcast's checks and D7 requests.

Prints ack p50/p99 for both and the p99 ratio, per mode and run; --chart writes both sides' ack distributions
(every run's acks together, one panel per mode) as a PNG (``bench._charts``, the ``bench`` extra). Bounded by
--requests and --runs; stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._bot import bot_env, bot_process, database_url, percentile
from bench._fake import loopback_fakes
from bench.pipeline import with_budgets
from tests.fakes.slack import APP_TOKEN
from tests.fakes.socket_mode import FakeSocketMode, envelope
from tests.harness import event_callback, sign, slash_command

ALERTS = "C0ALERTS"
ONCALL = ["+14155550100", "+14155550101"]


def alert(i: int) -> dict[str, Any]:
    """The ``i``-th of a storm's Grafana posts, each a different alert (``bench.alert_storm``'s shape, kept here so
    that this bench does not follow that one's changes)."""
    name = "".join(chr(ord("a") + (i // 26**k) % 26) for k in range(4))
    return {
        "type": "message",
        "subtype": "bot_message",
        "bot_id": "B0GRAFANA",
        "username": "Grafana",
        "text": "",
        "ts": f"1763900000.{i:06d}",
        "attachments": [
            {
                "fallback": f"[FIRING:1] Check {name} failed",
                "title": f"[FIRING:1] Check {name} failed",
                "text": f"Probe {name} failed {i % 50 + 3} times in a row on <https://grafana.example.com/d/{name}|{name}>",
                "fields": [{"title": "severity", "value": "critical", "short": True}],
            }
        ],
    }


def burst(base: str, slack_url: str, requests: int, threads: int, tag: str) -> list[float]:
    bodies = [
        slash_command("/sms", f"+1415555{i % 10000:04d} {tag} {i}", response_url=f"{slack_url}/response/{tag}/{i}")
        for i in range(requests)
    ]

    def one(body: bytes) -> float:
        return post(base, body, "application/x-www-form-urlencoded")

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, bodies))


def post(base: str, body: bytes, content_type: str) -> float:
    """POST ``body`` signed to ``/slack/events``; the seconds until the answer."""
    request = urllib.request.Request(  # noqa: S310 - loopback only
        f"{base}/slack/events", data=body, headers={"Content-Type": content_type, **sign(body)}, method="POST"
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback only
        response.read()
        if response.status != 200:
            raise RuntimeError(f"ack {response.status}")
    return time.perf_counter() - started


def command_payload(text: str, slack_url: str, tag: str, i: int) -> dict[str, Any]:
    """A slash command's fields, as a Socket Mode envelope carries them."""
    body = slash_command("/sms", text, response_url=f"{slack_url}/response/{tag}/{i}")
    return dict(parse_qsl(body.decode(), keep_blank_values=True))


def socket_burst(socket: FakeSocketMode, slack_url: str, requests: int, tag: str) -> list[float]:
    envelopes = [
        envelope("slash_commands", command_payload(f"+1415555{i % 10000:04d} {tag} {i}", slack_url, tag, i))
        for i in range(requests)
    ]
    return socket.send(envelopes)


class Background:
    """``--background``: load on the bot beside its burst (None: nothing)."""

    def __init__(self, spec: str | None) -> None:
        kind, _, amount = (spec or "none:0").partition(":")
        if kind not in ("none", "storm", "broadcast") or not amount.isdigit():
            raise SystemExit(f"--background: storm:RATE or broadcast:N, not {spec!r}")
        self.kind, self.amount = kind, int(amount)
        self.sent = 0

    def policy(self, text: str) -> str:
        """The bot's policy with what the load needs: the storm's alert rule, the broadcast's contact group."""
        if self.kind == "none":
            return text
        policy = yaml.safe_load(text)
        contacts = policy.setdefault("contacts", {})
        if self.kind == "storm":
            contacts["oncall"] = ONCALL
            policy["alerts"] = [
                {
                    "name": "storm",
                    "slack_channels": [ALERTS],
                    "match": "(?i)firing",
                    "from": "bots",
                    "sender": "ops-sms",
                    "to": ["group:oncall"],
                    "template": "{title}: {text}",
                    "dedupe_window": "10m",
                }
            ]
        else:
            contacts["everyone"] = [f"+1415600{i:04d}" for i in range(self.amount)]
            rule = policy["rules"][0]
            rule["recipients"] = [*rule["recipients"], "group:everyone"]
            rule["max_recipients"] = self.amount
        return str(yaml.safe_dump(policy, sort_keys=False))

    @contextmanager
    def beside(self, base: str, slack_url: str, socket: FakeSocketMode | None, tag: str) -> Iterator[None]:
        """Run the load while the block (the burst) runs."""
        if self.kind == "broadcast":
            text = f"group:everyone broadcast {tag}"
            if socket is None:
                post(base, slash_command("/sms", text, response_url=f"{slack_url}/response/{tag}/b"), FORM)
            else:
                socket.send([envelope("slash_commands", command_payload(text, slack_url, tag, -1))])
            self.sent += 1
            yield
            return
        if self.kind != "storm":
            yield
            return
        stop = threading.Event()
        thread = threading.Thread(target=self._storm, args=(base, socket, stop), daemon=True)
        thread.start()
        time.sleep(0.5)
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=15)

    def _storm(self, base: str, socket: FakeSocketMode | None, stop: threading.Event) -> None:
        pool = ThreadPoolExecutor(max_workers=8)
        first = time.perf_counter()
        i = 0
        while not stop.is_set() and i < self.amount * 30:  # bounded: 30 s of events at most
            time.sleep(max(0.0, first + i / self.amount - time.perf_counter()))
            event = alert(self.sent + i)
            if socket is None:
                pool.submit(post, base, event_callback(event, channel=ALERTS), "application/json")
            else:
                payload = json.loads(event_callback(event, channel=ALERTS))
                socket.send_soon([envelope("events_api", payload)])
            i += 1
        pool.shutdown(wait=True)
        self.sent += i


FORM = "application/x-www-form-urlencoded"


def measure(
    env: dict[str, str],
    work: Path,
    slack_url: str,
    args: argparse.Namespace,
    tag: str,
    socket: FakeSocketMode | None,
    background: Background | None,
) -> list[float]:
    """The burst's ack times, in seconds (HTTP, or Socket Mode when ``socket`` is given)."""
    if socket is not None:
        env = {**env, "SLACK_APP_TOKEN": APP_TOKEN}
    load = background or Background(None)
    with bot_process(env, work) as (base, _):
        if socket is None:
            burst(base, slack_url, 10, 10, f"{tag}-warm")  # warm-up: imports, connections, first SQL
        else:
            socket.wait_connected()
            socket_burst(socket, slack_url, 10, f"{tag}-warm")
        time.sleep(args.d7_delay + 0.5)
        with load.beside(base, slack_url, socket, tag):
            if socket is None:
                return burst(base, slack_url, args.requests, args.threads, tag)
            return socket_burst(socket, slack_url, args.requests, tag)


def summary(acks: list[float]) -> dict[str, float]:
    return {"ack_p50_ms": round(percentile(acks, 50) * 1000, 1), "ack_p99_ms": round(percentile(acks, 99) * 1000, 1)}


@contextmanager
def baseline(order: str) -> Iterator[None]:
    """``bench._bot.bot_process`` starts the bare Bolt app (in the order asked) instead of the bot."""
    os.environ["BENCH_BOT_CMD"] = "-m bench._bare_bolt"
    os.environ["BARE_ORDER"] = order
    try:
        yield
    finally:
        os.environ.pop("BENCH_BOT_CMD", None)
        os.environ.pop("BARE_ORDER", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--threads", type=int, default=50, help="HTTP client threads")
    parser.add_argument("--d7-delay", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=1, help="alternate bot and bare Bolt this many times")
    parser.add_argument("--mode", choices=["http", "socket", "both"], default="http")
    parser.add_argument("--budgets", action="store_true", help="three budgets counted per send (the bot's)")
    parser.add_argument("--background", help="load beside the bot's burst: storm:RATE or broadcast:N")
    parser.add_argument("--baseline", choices=["announce-first", "d7-first"], default="announce-first")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--chart", type=Path, help="write both sides' ack distributions (CDF) as a PNG")
    args = parser.parse_args()
    background = Background(args.background)
    modes = ["http", "socket"] if args.mode == "both" else [args.mode]
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    acks: dict[str, dict[str, list[float]]] = {mode: {"bot": [], "bare Bolt": []} for mode in modes}
    with FakeSocketMode() as socket_server:
        slack_args = ("--channel", ALERTS, "--socket-mode-url", socket_server.ws_url)
        with loopback_fakes(args.d7_delay, *slack_args) as (work, slack_url, d7_url):
            if args.budgets:
                with_budgets(work / "policy.yml")
            (work / "policy.yml").write_text(background.policy((work / "policy.yml").read_text()))
            for run in range(args.runs):
                for mode in modes:
                    socket = socket_server if mode == "socket" else None
                    url = database_url(args.database, work)  # PostgreSQL: its tables dropped for each bot run
                    env = bot_env(slack_url, d7_url, work / "policy.yml", url)
                    ours = measure(env, work, slack_url, args, f"bot{run}{mode}", socket, background)
                    with baseline(args.baseline):
                        bare = measure(env, work, slack_url, args, f"bare{run}{mode}", socket, None)
                    acks[mode]["bot"] += ours
                    acks[mode]["bare Bolt"] += bare
                    ratio = round(percentile(ours, 99) / percentile(bare, 99), 2)
                    results[mode].append({"bot": summary(ours), "bare_bolt": summary(bare), "p99_ratio": ratio})
    report = {
        "requests": args.requests,
        "threads": args.threads,
        "d7_delay_s": args.d7_delay,
        "budgets": args.budgets,
        "background": args.background or "none",
        "background_sent": background.sent,
        "baseline": args.baseline,
        "database": args.database,
        "runs": results,
    }
    print(json.dumps(report, indent=2))
    if args.chart:
        from bench._charts import ack_cdfs

        extra = ", budgets" if args.budgets else ""
        extra += f", bot beside a {args.background}" if args.background else ""
        title = f"{args.requests} /sms at once, D7 at {args.d7_delay:g} s{extra}, {args.runs} run(s) a side"
        names = {"http": f"HTTP ({args.threads} client threads)", "socket": "Socket Mode (one socket)"}
        ack_cdfs(args.chart, {names[mode]: acks[mode] for mode in modes}, title=title)


if __name__ == "__main__":
    main()
