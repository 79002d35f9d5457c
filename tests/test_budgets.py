"""Budgets: the policy's ``limits`` counted in billed messages when a send is checked, all or none, once per send,
given back when nothing went out, and never overrun by concurrent sends (SQLite, and PostgreSQL with two bot
processes). The ledger on both databases; the refusals end to end, as the sender and an alert's thread see them."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.budgets import Charge, Overrun, Window, take, until
from bot.domain.errors import PolicyFileError
from bot.domain.policy import Budget, parse_policy
from bot.storage import Storage
from bot.storage.database import Database, now
from bot.storage.engine import create_engine, migrate
from bot.storage.schema import UTCDateTime, alert_deliveries, alert_windows, budget_windows
from tests.fakes.d7 import FakeD7, Reply
from tests.fakes.slack import FakeSlack
from tests.harness import App, event_callback, reset_postgres, running_app, sign, slash_command
from tests.test_cli import run
from tests.test_replicas_and_shutdown import pg_rows, stop
from tests.test_restart import bot_env, start_bot, wait_until
from tests.test_serve import free_port

PG_URL = os.environ.get("TEST_DATABASE_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="TEST_DATABASE_URL is not set")
SMS = "/messages/v1/send"

POLICY = """
version: 1
defaults:
  region: US
  max_segments: 5
  limits:
    per_user: none  # the rules' budgets are the subject here
    workspace: {messages: 1000, per: 1d}
senders:
  ops-sms: {via: sms, originator: OpsAlert}
rules:
  - name: ops
    slack_channels: [C0OPS]
    users: ["*"]
    senders: [ops-sms]
    recipients: ["region:US"]
    limits:
      per_user: {messages: 4, per: 1h}
      per_channel: {messages: 6, per: 1d}
alerts:
  - name: pages
    slack_channels: [C0ALERTS]
    match: "(?i)critical"
    from: any
    sender: ops-sms
    to: ["+14155550100", "+14155550101"]
    limits:
      per_rule: {messages: 3, per: 1h}
"""


def hour(messages: int) -> Budget:
    return Budget(messages=messages, per=timedelta(hours=1))


def charge(key: str, messages: int = 20) -> Charge:
    return Charge(key, hour(messages), f"budget {key}", "rule_per_user")


# ---------------------------------------------------------------- the policy


def test_limits_are_read_from_the_policy() -> None:
    policy = parse_policy(
        {
            "version": 1,
            "defaults": {
                "limits": {"per_user": {"messages": 200, "per": "1d"}, "workspace": {"messages": 9, "per": "2h"}}
            },
            "senders": {"s": {"via": "sms", "originator": "Ops"}},
            "rules": [
                {
                    "name": "r",
                    "slack_channels": ["C0OPS"],
                    "users": ["*"],
                    "senders": ["s"],
                    "recipients": ["*"],
                    "limits": {"per_channel": {"messages": 50, "per": "1h"}},
                }
            ],
        }
    )
    assert policy.defaults.limits.per_user == Budget(messages=200, per=timedelta(days=1))
    assert policy.defaults.limits.workspace == Budget(messages=9, per=timedelta(hours=2))
    assert policy.rules[0].limits.per_channel == hour(50)
    assert policy.rules[0].limits.per_user is None


@pytest.mark.parametrize(
    ("limits", "problem"),
    [
        ({"per_users": {"messages": 5, "per": "1h"}}, "rules[0].limits.per_users: unknown key"),
        ({"per_user": {"messages": 0, "per": "1h"}}, "rules[0].limits.per_user.messages"),
        ({"per_user": {"messages": 5, "per": "soon"}}, "rules[0].limits.per_user.per"),
        ({"per_user": {"messages": 5}}, "rules[0].limits.per_user.per"),
    ],
)
def test_a_bad_budget_is_named_by_its_path(limits: dict[str, object], problem: str) -> None:
    data = {
        "version": 1,
        "senders": {"s": {"via": "sms", "originator": "Ops"}},
        "rules": [
            {"name": "r", "slack_channels": ["C0OPS"], "users": ["*"], "senders": ["s"], "recipients": ["*"]}
            | {"limits": limits}
        ],
    }
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(data)
    assert problem in str(caught.value)


# ---------------------------------------------------------------- the ledger, on both databases


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_pg)])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bot.db'}"
        return
    assert PG_URL is not None
    await reset_postgres(PG_URL)
    yield PG_URL


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    await migrate(engine)
    yield engine
    await engine.dispose()


async def test_a_budget_takes_sends_until_it_is_spent_then_names_what_is_left(engine: AsyncEngine) -> None:
    ledger = Storage.on(Database(engine)).budgets
    budgets = [charge("rule:ops:user:U1", 5)]

    assert await ledger.charge("s1", budgets, 3) is None
    over = await ledger.charge("s2", budgets, 3)
    assert over is not None
    assert (over.charge.key, over.used, over.needed, over.left) == ("rule:ops:user:U1", 3, 3, 2)
    assert over.refills_at is not None
    assert timedelta(minutes=59) < over.refills_at - now() <= timedelta(hours=1)
    assert await ledger.charge("s3", budgets, 2) is None
    assert (await ledger.usage(["rule:ops:user:U1", "nobody"]))["rule:ops:user:U1"].used == 5
    assert "nobody" not in await ledger.usage(["nobody"])


async def test_a_send_is_counted_against_every_budget_or_none(engine: AsyncEngine) -> None:
    ledger = Storage.on(Database(engine)).budgets
    roomy, tight = charge("a-roomy", 100), charge("b-tight", 4)

    assert await ledger.charge("s1", [roomy, tight], 3) is None
    over = await ledger.charge("s2", [roomy, tight], 3)
    assert over is not None
    assert over.charge == tight
    usage = await ledger.usage(["a-roomy", "b-tight"])
    assert {k: u.used for k, u in usage.items()} == {"a-roomy": 3, "b-tight": 3}  # s2 counted nowhere


async def test_a_send_asked_about_again_is_counted_once(engine: AsyncEngine) -> None:
    ledger = Storage.on(Database(engine)).budgets
    budgets = [charge("k", 5)]
    assert await ledger.charge("s1", budgets, 4) is None
    assert await ledger.charge("s1", budgets, 4) is None  # after a restart between counting and sending
    assert (await ledger.usage(["k"]))["k"].used == 4


async def test_a_send_counted_before_a_budget_shrank_is_not_refused_when_asked_again(engine: AsyncEngine) -> None:
    ledger = Storage.on(Database(engine)).budgets
    assert await ledger.charge("s1", [charge("k", 10)], 6) is None
    # The policy was reloaded with a smaller budget before s1 reached D7 (a restart in between): s1 is counted.
    assert await ledger.charge("s1", [charge("k", 5)], 6) is None
    assert (await ledger.usage(["k"]))["k"].used == 6


async def test_sends_charged_at_the_same_moment_share_one_transaction_and_stay_exact(engine: AsyncEngine) -> None:
    transactions = 0

    class Counting(Database):
        def begin(self, intake: bool = False, within: float = 30.0) -> Any:
            nonlocal transactions
            transactions += 1
            return super().begin(intake, within)

    ledger = Storage.on(Counting(engine)).budgets
    budgets = [charge("rule:ops:user:U1", 20), charge("channel:C1", 1000), charge("workspace", 1000)]
    verdicts = await asyncio.gather(*(ledger.charge(f"s{i}", budgets, 1) for i in range(40)))

    assert [v is None for v in verdicts] == [True] * 20 + [False] * 20  # decided in the order they were asked
    assert {(v.charge.key, v.used, v.left) for v in verdicts if v is not None} == {("rule:ops:user:U1", 20, 0)}
    assert transactions <= 3  # one group commit for all 40, not 40 transactions of three upserts each
    usage = await ledger.usage(["rule:ops:user:U1", "channel:C1", "workspace"])
    assert {k: u.used for k, u in usage.items()} == {"rule:ops:user:U1": 20, "channel:C1": 20, "workspace": 20}


def test_a_send_takes_from_every_window_or_none_and_an_ended_window_opens_again() -> None:
    at = now()
    windows = {
        "ended": Window(at - timedelta(hours=2), at - timedelta(hours=1), 20),
        "full": Window(at - timedelta(minutes=5), at + timedelta(minutes=55), 19),
    }
    before = dict(windows)
    over = take(windows, [charge("ended", 20), charge("full", 20)], 2, at)
    assert over is not None
    assert (over.charge.key, over.used, over.needed) == ("full", 19, 2)
    assert windows == before  # nothing taken anywhere

    assert take(windows, [charge("ended", 20), charge("full", 20), charge("new", 5)], 1, at) is None
    assert windows["ended"] == Window(at, at + timedelta(hours=1), 1)
    assert windows["full"].used == 20
    assert windows["new"] == Window(at, at + timedelta(hours=1), 1)


async def test_two_workers_giving_back_the_same_send_give_it_back_once(url: str) -> None:
    engines = [create_engine(url), create_engine(url)]
    await migrate(engines[0])
    one, two = (Storage.on(Database(e)).budgets for e in engines)
    try:
        assert await one.charge("s1", [charge("k", 10)], 3) is None
        assert await one.charge("s2", [charge("k", 10)], 4) is None
        await asyncio.gather(one.refund("s2"), two.refund("s2"))
        assert (await one.usage(["k"]))["k"].used == 3
    finally:
        for e in engines:
            await e.dispose()


def test_how_long_until_a_budget_refills_is_said_in_two_units_at_most() -> None:
    at = now()
    assert until(at + timedelta(seconds=30), at) == "30 seconds"
    assert until(at + timedelta(seconds=61), at) == "2 minutes"
    assert until(at + timedelta(minutes=59, seconds=30), at) == "1 hour"
    assert until(at + timedelta(hours=2, seconds=1), at) == "2 hours 1 minute"
    assert until(at + timedelta(days=2, hours=3), at) == "2 days 3 hours"
    assert until(at + timedelta(days=1), at) == "1 day"
    assert until(at - timedelta(seconds=5), at) == "0 seconds"


async def test_a_send_bigger_than_the_whole_budget_says_waiting_will_not_help(engine: AsyncEngine) -> None:
    ledger = Storage.on(Database(engine)).budgets
    over = await ledger.charge("s1", [charge("k", 5)], 6)
    assert over == Overrun(charge("k", 5), 0, 6, None)
    assert await ledger.usage(["k"]) == {}


async def test_nothing_sent_gives_the_messages_back_and_an_ended_window_refills(engine: AsyncEngine) -> None:
    ledger = Storage.on(Database(engine)).budgets
    budgets = [charge("k", 5)]
    assert await ledger.charge("s1", budgets, 2) is None
    assert await ledger.charge("s2", budgets, 3) is None
    await ledger.refund("s2")
    await ledger.refund("s2")  # twice: given back once
    assert (await ledger.usage(["k"]))["k"].used == 2

    async with engine.begin() as conn:  # the hour has passed
        past = sa.literal(now() - timedelta(seconds=1), UTCDateTime())
        await conn.execute(budget_windows.update().values(window_end=past))
    assert await ledger.usage(["k"]) == {}
    assert await ledger.charge("s3", budgets, 5) is None
    usage = (await ledger.usage(["k"]))["k"]
    assert usage.used == 5
    assert usage.refills_at is not None
    assert usage.refills_at - now() > timedelta(minutes=59)
    await ledger.refund("s1")  # counted in the window that ended: this one keeps its count
    assert (await ledger.usage(["k"]))["k"] == usage


async def test_fifty_concurrent_sends_from_two_replicas_against_a_budget_of_twenty_take_exactly_twenty(
    url: str,
) -> None:
    engines = [create_engine(url), create_engine(url)]  # two replicas: pools, connections and sessions of their own
    await migrate(engines[0])
    ledgers = [Storage.on(Database(e)).budgets for e in engines]
    budgets = [charge("rule:ops:user:U1", 20), charge("workspace", 1000)]
    try:
        verdicts = await asyncio.gather(*(ledgers[i % 2].charge(f"s{i}", budgets, 1) for i in range(50)))
        usage = await ledgers[0].usage(["rule:ops:user:U1", "workspace"])
    finally:
        for e in engines:
            await e.dispose()
    assert sum(v is None for v in verdicts) == 20
    assert {v.charge.key for v in verdicts if v is not None} == {"rule:ops:user:U1"}
    assert {k: u.used for k, u in usage.items()} == {"rule:ops:user:U1": 20, "workspace": 20}


# ---------------------------------------------------------------- end to end


@pytest.fixture
def slack(slack: FakeSlack) -> FakeSlack:
    slack.add_channel("C0ALERTS", name="alerts")
    return slack


@pytest.fixture
async def app(slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(slack, fake_d7, tmp_path, policy=POLICY) as running:
        yield running


def numbers(count: int, first: int = 0) -> str:
    return " ".join(f"+1415555{first + i:04d}" for i in range(count))


def refusal(slack: FakeSlack) -> list[str]:
    """The heading and problems of the last ephemeral refusal the sender got."""
    blocks = slack.responses["cmd"][-1]["blocks"]
    return [b["text"]["text"] for b in blocks[:2]]


async def test_a_send_over_the_users_budget_is_refused_saying_which_what_is_left_and_when_it_refills(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    await app.command("/sms", f"{numbers(3)} first")
    await app.settle()
    await app.command("/sms", f"{numbers(2, 10)} second")
    await app.settle()

    assert [b["messages"][0]["content"] for b in fake_d7.bodies(SMS)] == ["first"]
    heading, problem = refusal(slack)
    assert heading == ":hourglass: *Not sent:* over budget. Nothing was sent."
    match = re.fullmatch(
        r"• your budget in rule 'ops' \(4 messages per 1h\) has 1 message left and this costs 2 messages "
        r"\(2 recipients × 1 segment\); it refills in (59 minutes|1 hour) \((\d\d:\d\d) UTC\)",
        problem,
    )
    assert match is not None, problem
    # The refusal is the sender's alone: nothing about it in the channel.
    assert [p["text"] for p in slack.of("chat.postMessage") if "second" in p["text"]] == []
    assert app.relay.metrics.over_budget.labels("rule_per_user")._value.get() == 1


async def test_segments_count_and_a_channels_budget_is_shared_by_its_people(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    long_text = "x" * 200  # two SMS segments
    await app.command("/sms", f"{numbers(2)} {long_text}", user="U0ALICE")  # 4 messages: alice's budget is spent
    await app.settle()
    await app.command("/sms", f"{numbers(1)} short", user="U0ALICE")
    await app.settle()
    assert (
        "your budget in rule 'ops' (4 messages per 1h) has 0 messages left and this costs 1 message"
        in (refusal(slack)[1])
    )
    await app.command("/sms", f"{numbers(1, 5)} {long_text}", user="U0BOB")  # 2 more: #ops has 6 a day
    await app.settle()
    await app.command("/sms", f"{numbers(1, 6)} one more", user="U0BOB")
    await app.settle()

    assert len(fake_d7.bodies(SMS)) == 2
    assert refusal(slack)[1].startswith(
        "• the budget of <#C0OPS> in rule 'ops' (6 messages per 1d) has 0 messages left and this costs 1 message "
        "(1 recipient × 1 segment); it refills in 1 day ("
    )


async def test_a_send_bigger_than_the_budget_is_told_to_shrink(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    await app.command("/sms", f"{numbers(5)} hello")
    await app.settle()
    assert refusal(slack)[1] == (
        "• this costs 5 messages (5 recipients × 1 segment), more than your budget in rule 'ops' allows at all "
        "(4 messages per 1h): send to fewer people or a shorter text"
    )
    assert fake_d7.requests == []


async def test_a_send_d7_refused_gives_its_messages_back(app: App, slack: FakeSlack, fake_d7: FakeD7) -> None:
    fake_d7.enqueue(Reply(400, path=SMS))  # D7 refuses it: nothing went out, nothing billed
    await app.command("/sms", f"{numbers(4)} refused")
    await app.settle()
    await app.command("/sms", f"{numbers(4)} accepted")
    await app.settle()

    assert [b["messages"][0]["content"] for b in fake_d7.bodies(SMS)] == ["refused", "accepted"]
    usage = await app.relay.storage.budgets.usage(["rule:ops:user:U0ALICE", "workspace"])
    assert {k: u.used for k, u in usage.items()} == {"rule:ops:user:U0ALICE": 4, "workspace": 4}


async def test_an_alert_over_its_rules_budget_is_told_in_its_thread(
    app: App, slack: FakeSlack, fake_d7: FakeD7
) -> None:
    first = {"type": "message", "user": "U0ALICE", "text": "CRITICAL: db-1 down", "ts": "1700000001.000100"}
    second = first | {"text": "CRITICAL: db-2 down", "ts": "1700000002.000100"}
    await app.event(event_callback(first, channel="C0ALERTS"))
    await app.settle()
    await app.event(event_callback(second, channel="C0ALERTS"))
    await app.settle()

    assert [b["messages"][0]["content"] for b in fake_d7.bodies(SMS)] == ["CRITICAL: db-1 down"]  # 2 of its 3
    (told,) = [p for p in slack.of("chat.postMessage") if p.get("thread_ts") == second["ts"]]
    assert told["channel"] == "C0ALERTS"
    shown = " ".join(b["text"]["text"] for b in told["blocks"] if "text" in b)
    assert ":hourglass: *Alert not texted:* over budget. Nothing was sent." in shown
    assert (
        "the budget of alert rule 'pages' (3 messages per 1h) has 1 message left and this costs 2 messages "
        "(2 recipients × 1 segment); it refills in" in shown
    )


async def test_an_alert_refused_for_its_budget_gives_back_the_per_phone_counts_it_took(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    slack.add_channel("C0ALERTS", name="alerts")
    policy = POLICY.replace(
        "      per_rule: {messages: 3, per: 1h}",
        "      per_rule: {messages: 2, per: 1h}\n    max_per_phone: {count: 2, per: 1h}",
    )
    alerts = [
        {"type": "message", "user": "U0ALICE", "text": f"CRITICAL: db-{i} down", "ts": f"170000000{i}.000100"}
        for i in (1, 2, 3)
    ]
    async with running_app(slack, fake_d7, tmp_path, policy=policy) as app:
        for alert in alerts[:2]:
            await app.event(event_callback(alert, channel="C0ALERTS"))
            await app.settle()
        async with app.relay.storage.database.connect() as conn:
            windows = (await conn.execute(sa.select(alert_windows.c.phone, alert_windows.c.sent))).all()
            deliveries = (await conn.execute(sa.select(sa.func.count()).select_from(alert_deliveries))).scalar_one()
    # Alert 1 texted both phones (the rule's 2 messages); alert 2 was refused: each phone has had one text.
    assert sorted(windows) == [("+14155550100", 1), ("+14155550101", 1)]
    assert deliveries == 2  # alert 1's; alert 2 counts for no phone and no summary
    assert [b["messages"][0]["content"] for b in fake_d7.bodies(SMS)] == ["CRITICAL: db-1 down"]


@pytest.mark.usefixtures("unpaced")
async def test_fifty_concurrent_commands_against_a_budget_of_twenty_send_exactly_twenty(
    slack: FakeSlack, fake_d7: FakeD7, tmp_path: Path
) -> None:
    slack.relax_rates()  # about budgets, not Slack's pace for the 50 announcements
    policy = POLICY.replace("per_user: {messages: 4, per: 1h}", "per_user: {messages: 20, per: 1h}").replace(
        "per_channel: {messages: 6, per: 1d}", "per_channel: {messages: 500, per: 1d}"
    )
    async with running_app(slack, fake_d7, tmp_path, policy=policy) as app:
        answers = await asyncio.gather(*(app.command("/sms", f"{numbers(1, i)} burst {i}") for i in range(50)))
        await app.settle(30)
        records = await app.relay.storage.sends.audit()

    assert {a.status_code for a in answers} == {200}
    assert len(fake_d7.bodies(SMS)) == 20
    states = sorted(r.state.value for r in records)
    assert states == ["accepted"] * 20 + ["denied"] * 30
    refusals = [r.refusal for r in records if r.refusal is not None]
    assert {r.kind.value for r in refusals} == {"over_budget"}
    assert len([p for p in slack.responses["cmd"] if "has 0 messages left" in p["text"]]) == 30


async def test_explain_shows_the_budgets_and_what_is_used(app: App, tmp_path: Path) -> None:
    await app.command("/sms", f"{numbers(3)} hi")
    await app.settle()
    result = await asyncio.to_thread(
        run,
        "explain",
        *("--user", "U0ALICE", "--channel", "C0OPS", "--via", "sms", "--to", "+14155550100"),
        env={"BOT_POLICY": str(tmp_path / "policy.yml"), "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}"},
    )
    lines = result.stdout.splitlines()
    assert lines[1:3] == [
        "ALLOWED by rule 'ops', sender 'ops-sms'",
        "budgets (billed messages: recipients x SMS segments):",
    ]
    assert re.fullmatch(
        r"  the user's budget in rule 'ops': 3 of 4 messages per 1h used, 1 left; refills in (59 minutes|1 hour) "
        r"\((\d{4}-\d\d-\d\d )?\d\d:\d\d UTC\)",
        lines[3],
    ), lines[3]
    assert lines[4].startswith("  the budget of C0OPS in rule 'ops': 3 of 6 messages per 1d used, 3 left; refills in")
    assert lines[5].startswith("  the workspace's budget: 3 of 1000 messages per 1d used, 997 left")


# ---------------------------------------------------------------- two bot processes on PostgreSQL


@needs_pg
def test_fifty_commands_split_over_two_bot_processes_against_a_budget_of_twenty_send_exactly_twenty(
    slack: FakeSlack, tmp_path: Path
) -> None:
    assert PG_URL is not None
    asyncio.run(reset_postgres(PG_URL))
    slack.relax_rates()
    (tmp_path / "policy.yml").write_text(
        POLICY.replace("per_user: {messages: 4", "per_user: {messages: 20").replace(
            "per_channel: {messages: 6", "per_channel: {messages: 500"
        )
    )
    procs: list[subprocess.Popen[bytes]] = []
    with FakeD7(delay=0.05) as d7:
        env_a = bot_env(slack, d7, tmp_path) | {"DATABASE_URL": PG_URL}
        env_b = env_a | {"PORT": str(free_port())}
        try:
            procs.append(start_bot(env_a, tmp_path, tmp_path / "a.log"))
            procs.append(start_bot(env_b, tmp_path, tmp_path / "b.log"))

            async def burst() -> list[int]:
                async with httpx.AsyncClient(timeout=10) as http:

                    async def one(i: int) -> int:
                        env = (env_a, env_b)[i % 2]
                        body = slash_command(
                            "/sms", f"{numbers(1, i)} burst {i}", response_url=slack.response_url("cmd")
                        )
                        headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(body)}
                        url = f"http://127.0.0.1:{env['PORT']}/slack/events"
                        return (await http.post(url, content=body, headers=headers)).status_code

                    return await asyncio.gather(*(one(i) for i in range(50)))

            assert set(asyncio.run(burst())) == {200}
            wait_until(lambda: sum(1 for r in pg_rows(PG_URL) if r["posted_at"] is not None) == 50, 60)
        finally:
            stop(*procs)

    final = pg_rows(PG_URL)
    assert len(d7.bodies(SMS)) == 20
    assert sorted(r["state"] for r in final) == ["accepted"] * 20 + ["denied"] * 30
    assert {r["refusal_kind"] for r in final if r["state"] == "denied"} == {"over_budget"}
    refused = [(tmp_path / f"{n}.log").read_text().count("over budget send_id=") for n in ("a", "b")]
    assert sum(refused) == 30, refused  # each refusal decided once, by one of the two
